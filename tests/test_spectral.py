import math

import numpy as np
import pytest
from scipy import integrate

from hdlora.theory import spectral

CASES = [(0.5, 1.0), (1e-3, 1.0), (0.05, 0.5), (1e-3, 0.5), (2.0, 2.0), (0.3, 0.5)]


@pytest.mark.parametrize("eta,kappa0", CASES)
def test_normalisation_and_first_two_moments(eta, kappa0):
    m0, m1, m2 = spectral.moments(eta, kappa0)
    assert m0 == pytest.approx(1.0, abs=1e-10)
    assert m1 == pytest.approx(math.sqrt(kappa0), abs=1e-10)
    assert m2 == pytest.approx(1 + kappa0 + eta**2, abs=1e-10)


def test_kappa0_below_one_has_the_atom_bump_as_its_own_interval_at_small_eta():
    sup = spectral.support(1e-3, 0.5)
    assert len(sup) == 2 and sup[0][0] < 0 < sup[0][1] < sup[1][0]
    lo, hi = sup[0]
    mass, _ = integrate.quad(lambda x: spectral.density(x, 1e-3, 0.5), lo, hi, limit=200)
    assert mass == pytest.approx(0.5, abs=1e-7)  # the atom 1 − κ0 of μ0, spread by the semicircle


def _J_quad(eta, eps, kappa0):
    """Independent J and J2 with scipy's adaptive quadrature of the density."""
    J = J2 = 0.0
    for lo, hi in spectral.support(eta, kappa0):
        a = max(lo, eps)
        if a >= hi:
            continue
        kw = dict(epsabs=1e-13, epsrel=1e-13, limit=400)
        J += integrate.quad(
            lambda x: (x - eps) ** 2 * spectral.density(x, eta, kappa0), a, hi, **kw
        )[0]
        J2 += (
            -2
            * integrate.quad(lambda x: (x - eps) * spectral.density(x, eta, kappa0), a, hi, **kw)[0]
        )
    return J, J2


@pytest.mark.parametrize(
    "eta,eps,kappa0",
    [(0.5, 0.3, 1.0), (0.2, 1.0, 0.5), (0.05, 0.01, 1.0), (1.0, 2.5, 1.0), (0.3, 4.0, 2.0)],
)
def test_J_and_derivatives(eta, eps, kappa0):
    J, J1, J2 = spectral.J(eta, eps, kappa0)
    Jq, J2q = _J_quad(eta, eps, kappa0)
    assert J == pytest.approx(Jq, abs=1e-10)
    assert J2 == pytest.approx(J2q, abs=1e-10)

    # J1 and J2 against central differences of J, twice Richardson-extrapolated (error O(h⁶))
    def d(h, wrt):
        if wrt == "eta":
            return (spectral.J(eta + h, eps, kappa0)[0] - spectral.J(eta - h, eps, kappa0)[0]) / (
                2 * h
            )
        return (spectral.J(eta, eps + h, kappa0)[0] - spectral.J(eta, eps - h, kappa0)[0]) / (2 * h)

    for wrt, exact in (("eta", J1), ("eps", J2)):
        h = 0.02 * eta
        d1, d2, d3 = d(h, wrt), d(h / 2, wrt), d(h / 4, wrt)
        r1, r2 = (4 * d2 - d1) / 3, (4 * d3 - d2) / 3
        assert exact == pytest.approx((16 * r2 - r1) / 15, abs=1e-10)


def test_eps_below_the_support_is_exact_and_continuous():
    eta, kappa0 = 0.4, 1.0
    a = spectral.support(eta, kappa0)[0][0]
    below = spectral.J(eta, a - 1e-9, kappa0)
    above = spectral.J(eta, a + 1e-9, kappa0)
    assert np.allclose(below, above, atol=1e-7)
    J, J1, J2 = spectral.J(eta, -3.0, kappa0)
    assert J == pytest.approx(1 + kappa0 + eta**2 + 6 * math.sqrt(kappa0) + 9)
    assert J1 == pytest.approx(2 * eta) and J2 == pytest.approx(-6 - 2 * math.sqrt(kappa0))


def test_vectorised_over_arrays():
    eta = np.array([0.2, 0.5, 1.0])
    eps = np.array([0.1, 0.5, 2.0])
    J, J1, J2 = spectral.J(eta, eps, 1.0)
    assert J.shape == (3,)
    for i in range(3):
        assert J[i] == pytest.approx(spectral.J(eta[i], eps[i], 1.0)[0], rel=1e-14)


def test_against_eigenvalues_of_a_finite_matrix():
    """μ_η against the spectrum of S*/√D + η·GOE (semicircle of radius 2η) at D = 2000."""
    D, kappa0, eta = 2000, 0.5, 0.3
    rng = np.random.default_rng(0)
    P0 = int(kappa0 * D)
    W = rng.standard_normal((D, P0))
    S = W @ W.T / math.sqrt(P0) / math.sqrt(D)
    A = rng.standard_normal((D, D))
    G = eta * (A + A.T) / math.sqrt(2 * D)
    ev = np.linalg.eigvalsh(S + G)
    for eps in (0.0, 1.0, 2.5):
        emp = np.mean(np.maximum(ev - eps, 0) ** 2)
        assert emp == pytest.approx(spectral.J(eta, eps, kappa0)[0], rel=2e-2, abs=2e-3)
    # Kolmogorov distance between the empirical and the theoretical distribution functions
    grid = np.linspace(ev.min(), ev.max(), 40)
    cdf = [
        sum(
            integrate.quad(lambda x: spectral.density(x, eta, kappa0), lo, min(hi, t), limit=200)[0]
            for lo, hi in spectral.support(eta, kappa0)
            if lo < t
        )
        for t in grid
    ]
    emp = np.searchsorted(np.sort(ev), grid, side="right") / D
    assert np.max(np.abs(emp - np.array(cdf))) < 0.02


def test_cube_integral_against_quadrature():
    eta, kappa0 = 0.5, 1.0
    ref = sum(
        integrate.quad(
            lambda x: spectral.density(x, eta, kappa0) ** 3, lo, hi, epsabs=1e-13, limit=200
        )[0]
        for lo, hi in spectral.support(eta, kappa0)
    )
    assert spectral.cube_integral(eta, kappa0) == pytest.approx(ref, rel=1e-9)


def test_replicon_integral_limits():
    # ε below the support: ζ is affine on it, the divided difference is 1
    assert spectral.replicon_integral(0.5, -5.0, 1.0) == pytest.approx(1.0, abs=1e-10)
    # ε above the support: ζ = 0
    assert spectral.replicon_integral(0.5, 50.0, 1.0) == 0.0
    # in between: strictly between 0 and 1, and ≥ (mean divided difference)² (Jensen)
    v = spectral.replicon_integral(0.5, 1.0, 1.0)
    J, J1, _ = spectral.J(0.5, 1.0, 1.0)
    mean_dd = J1 / (2 * 0.5)  # ∫∫ Δζ dμ dμ = J1/(2η)
    assert mean_dd**2 <= v < 1


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="eta"):
        spectral.J(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="kappa0"):
        spectral.J(0.5, 1.0, -1.0)


def test_stieltjes_off_the_support_is_the_right_branch():
    """Off the support g(x) = ∫ρ(y)/(x − y)dy is real: against scipy quadrature, also in the gap
    between the atom's bump and the bulk (κ0 < 1) and just past the edges."""
    for eta, kappa0 in [(1.4, 1.0), (0.1, 0.5)]:
        sup = spectral.support(eta, kappa0)
        xs = [sup[0][0] - 3.0, sup[0][0] - 1e-3, sup[-1][1] + 1e-3, sup[-1][1] + 3.0]
        if len(sup) > 1:
            xs.append(0.5 * (sup[0][1] + sup[1][0]))
        g = spectral.stieltjes(np.array(xs), eta, kappa0)
        for x, gx in zip(xs, g, strict=True):
            ref = sum(
                integrate.quad(
                    lambda y, x=x, e=eta, k=kappa0: spectral.density(y, e, k) / (x - y),
                    lo,
                    hi,
                    limit=200,
                )[0]
                for lo, hi in sup
            )
            assert gx.imag == 0 and gx.real == pytest.approx(ref, abs=1e-8)
