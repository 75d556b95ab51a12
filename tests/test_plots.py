"""The figures' shared marks (hdlora.harness.plots): the legend has an entry for every kind of
mark drawn and none for a kind not drawn; the simulations' entry names their D and runs as the
table says."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hdlora.harness.plots import (  # noqa: E402
    Legend,
    draw_curve,
    draw_simulation,
    simulation_text,
    stable_at,
)


def _labels(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_every_kind_drawn_has_an_entry_and_no_other():
    fig, ax = plt.subplots(layout="constrained")
    legend = Legend("simulation, D = 50, 3 runs: mean ± se")
    x = np.arange(5.0)
    draw_curve(ax, x, x, [True, True, False, True, True], color="C0", label="a", legend=legend)
    draw_curve(ax, x, 2 * x, color="C1", label="b", legend=legend)
    draw_simulation(ax, [1.0], [1.0], [0.1], color="C0", legend=legend)
    legend.draw(fig)
    labels = _labels(fig)
    assert labels[:2] == ["a", "b"]
    assert "theory (state evolution)" in labels
    assert "simulation, D = 50, 3 runs: mean ± se" in labels
    assert any("replicon ≥ 1" in t for t in labels)
    assert not any("not converged" in t for t in labels)
    plt.close(fig)

    fig, ax = plt.subplots(layout="constrained")
    legend = Legend()
    draw_curve(ax, x, x, None, [True, False, True, True, True], label="c", legend=legend)
    legend.draw(fig)
    labels = _labels(fig)
    assert any("not converged" in t for t in labels)
    assert not any("replicon" in t for t in labels) and not any("simulation" in t for t in labels)
    plt.close(fig)


def test_the_simulations_entry_counts_runs_per_point_and_names_every_D():
    sim = pd.DataFrame(
        {
            "lam": [0.1, 0.1, 0.1, 1.0, 1.0, 0.1],
            "D": [100, 100, 100, 100, 100, 200],
            "seed": [0, 1, 2, 0, 1, 0],
        }
    )
    assert (
        simulation_text(sim, ["lam"]) == "simulation, D = 100, 200, 1–3 runs: mean ± sd across runs"
    )
    one = sim.iloc[[5]]
    assert simulation_text(one, ["lam"]) == "simulation, D = 200, 1 run: mean ± sd across runs"


def test_the_line_is_broken_at_a_point_that_did_not_converge():
    fig, ax = plt.subplots()
    x = np.arange(5.0)
    line = draw_curve(ax, x, x, None, [True, True, False, True, True])
    assert np.isnan(line.get_ydata()[2]) and np.isfinite(np.delete(line.get_ydata(), 2)).all()
    plt.close(fig)


def test_a_change_of_branch_breaks_the_line_and_the_error_bar_is_the_spread_across_runs():
    from hdlora.harness.plots import broken_at, seed_means

    x, y = broken_at([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], ["u", "u", "i", "i"])
    np.testing.assert_array_equal(x, [1.0, 2.0, np.nan, 3.0, 4.0])
    np.testing.assert_array_equal(y, [5.0, 6.0, np.nan, 7.0, 8.0])
    x, _ = broken_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])  # no branch recorded: one line
    fig, ax = plt.subplots()
    (line,) = [draw_curve(ax, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], branch=["a", "b", "b"])]
    assert np.isnan(line.get_ydata()).sum() == 1  # no segment joins the two branches
    plt.close(fig)
    runs = pd.DataFrame({"x": [1, 1, 1, 2, 2], "y": [1.0, 2.0, 3.0, 4.0, np.nan]})
    s = seed_means(runs, ["x"], "y").set_index("x")
    assert s.loc[1, "sd"] == pytest.approx(1.0) and s.loc[1, "se"] == pytest.approx(1 / 3**0.5)
    assert s.loc[2, "mean"] == 4.0 and s.loc[2, "n"] == 1  # NaN (undefined) is not averaged in


def test_simulations_where_the_theory_is_replica_unstable_are_drawn_apart():
    """A simulated point takes the stability of the nearest theory point; those where the
    replicon is ≥ 1 are drawn hollow (white face) with their own legend entry, the others filled;
    a figure without such points has no such entry."""
    x_theory = np.array([0.0, 1.0, 2.0, 3.0])
    flags = stable_at([0.1, 1.9, 2.6, 3.0], x_theory, [True, True, False, True])
    assert flags.tolist() == [True, False, True, True]
    fig, ax = plt.subplots(layout="constrained")
    legend = Legend("simulation")
    draw_simulation(
        ax,
        [1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0],
        [0.1] * 3,
        color="C0",
        legend=legend,
        stable=[True, False, True],
    )
    legend.draw(fig)
    faces = {
        tuple(line.get_xdata()): matplotlib.colors.to_hex(line.get_markerfacecolor())
        for line in ax.lines
        if line.get_marker() == "s"  # not the error bars' caps
    }
    assert faces[(2.0,)] == "#ffffff" and faces[(1.0, 3.0)] != "#ffffff"
    assert any("drawn apart" in t for t in _labels(fig))
    plt.close(fig)
    fig, ax = plt.subplots(layout="constrained")
    legend = Legend("simulation")
    draw_simulation(ax, [1.0], [1.0], [0.1], color="C0", legend=legend, stable=[True])
    legend.draw(fig)
    assert not any("drawn apart" in t for t in _labels(fig))
    plt.close(fig)
