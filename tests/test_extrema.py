"""The located optimum of a curve (hdlora.harness.extrema) against curves whose optimum is known:
an exact parabola, a non-parabolic curve on a fine grid, and noisy curves whose stated standard
error is checked against the spread of the located optimum over many noise draws."""

import math

import numpy as np
import pytest

from hdlora.harness.extrema import locate_extremum


def test_an_exact_parabola_in_log_x_is_located_exactly():
    x = np.geomspace(1e-3, 1.0, 15)
    x0 = 0.0271
    y = 0.3 + 0.05 * (np.log(x) - math.log(x0)) ** 2
    ext = locate_extremum(x, y, np.full_like(y, 1e-3))
    assert ext.located and ext.kind == "min"
    assert ext.x == pytest.approx(x0, rel=1e-10)
    assert ext.y == pytest.approx(0.3, abs=1e-12)
    assert ext.grid_x != pytest.approx(x0, rel=1e-3)  # not a grid point


def test_a_maximum_on_a_linear_axis_of_a_smooth_curve():
    """exp(-(x − 0.37)²/0.1) + 0.2 x: its maximum solves the stationarity condition
    −2(x − 0.37)/0.1 · exp(·) + 0.2 = 0 (found here by bisection), and 21 points suffice for a
    local parabola to find it to 1e-3."""
    x = np.linspace(0.0, 1.0, 21)

    def f(t):
        return np.exp(-((t - 0.37) ** 2) / 0.1) + 0.2 * t

    def df(t):
        return -2 * (t - 0.37) / 0.1 * np.exp(-((t - 0.37) ** 2) / 0.1) + 0.2

    lo, hi = 0.3, 0.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if df(mid) > 0 else (lo, mid)
    ext = locate_extremum(x, f(x), kind="max", log=False, half_width=1)
    assert ext.located
    assert ext.x == pytest.approx(lo, abs=1e-3)


def test_the_stated_standard_error_matches_the_spread_over_noise_draws():
    """1000 noisy curves (independent errors of known size): the located minima scatter with the
    standard deviation the fit states, within 15 %; the mean is unbiased within 3 of its se."""
    rng = np.random.default_rng(0)
    x = np.geomspace(1e-3, 1.0, 20)
    x0, s = 0.02, 2e-3
    truth = 0.3 + 0.03 * (np.log(x) - math.log(x0)) ** 2
    found, stated = [], []
    for _ in range(1000):
        ext = locate_extremum(x, truth + s * rng.standard_normal(len(x)), np.full(len(x), s))
        if ext.located:
            found.append(math.log(ext.x))
            stated.append(ext.x_se / ext.x)
    found = np.array(found)
    assert len(found) > 950
    assert np.std(found) == pytest.approx(np.median(stated), rel=0.15)
    assert abs(found.mean() - math.log(x0)) < 3 * np.std(found) / math.sqrt(len(found))


def test_an_optimum_at_the_edge_of_the_grid_is_not_a_location():
    x = np.geomspace(0.01, 1.0, 10)
    ext = locate_extremum(x, x, np.full(10, 1e-3))  # increasing: minimum at the left end
    assert not ext.located and math.isnan(ext.x_se) and "edge" in ext.note
    assert ext.x == x[0]


def test_bad_input_names_its_parameter():
    with pytest.raises(ValueError, match="kind"):
        locate_extremum([1, 2, 3], [1, 0, 1], kind="argmin")
    with pytest.raises(ValueError, match="increasing"):
        locate_extremum([1, 3, 2], [1, 0, 1])


def test_too_few_points_are_not_a_location():
    ext = locate_extremum([0.1, 1.0], [2.0, 1.0], [0.1, 0.1])
    assert not ext.located and ext.x == 1.0 and "fewer than 3" in ext.note
    none = locate_extremum([0.1, 1.0], [np.nan, np.nan])
    assert not none.located and math.isnan(none.x)


def test_a_paper_value_agrees_within_two_standard_errors_on_the_fit_axis():
    x = np.geomspace(1e-3, 1.0, 15)
    y = 0.3 + 0.05 * (np.log(x) - math.log(0.02)) ** 2 + 1e-4 * np.cos(40 * np.log(x))
    ext = locate_extremum(x, y, np.full_like(y, 1e-3))
    assert ext.located and ext.x_se > 0
    assert ext.agrees_with(ext.x * math.exp(1.9 * ext.x_se / ext.x))
    assert not ext.agrees_with(ext.x * math.exp(2.1 * ext.x_se / ext.x))
    lin = locate_extremum(
        np.linspace(0, 1, 11),
        (np.linspace(0, 1, 11) - 0.43) ** 2 + 0.1,
        log=False,
        y_se=np.full(11, 1e-3),
    )
    assert lin.agrees_with(lin.x + 1.9 * lin.x_se) and not lin.agrees_with(lin.x + 2.1 * lin.x_se)
    edge = locate_extremum(x, x)
    assert not edge.agrees_with(edge.x)  # a grid point is not a location


def test_the_located_x_does_not_move_with_the_last_bits_of_the_curve():
    """A located x keys the tables computed at it: curves that differ by a few ulps (another
    BLAS thread count) must give the same x, bit for bit."""
    x = np.geomspace(1e-3, 1.0, 15)
    y = 0.3 + 0.05 * (np.log(x) - math.log(0.0271)) ** 2 + 0.01 * np.log(x) ** 3 / 50
    a = locate_extremum(x, y, np.full_like(y, 1e-3))
    b = locate_extremum(x, y * (1 + 4e-16), np.full_like(y, 1e-3))
    assert a.located and a.x == b.x
