r"""Spectral (free-probability) functions of the pre-training input channel (Result 4, App. A.3).

μ0 is the limiting spectral law of S*/√D, S* = P0^{-1/2} W* W*ᵀ: a Marchenko–Pastur law,
x = √κ0 λ with λ ~ MP(ratio 1/κ0), mean √κ0, second moment 1 + κ0 = Q0 (and an atom
1 − κ0 at 0 when κ0 < 1). μ_η = μ0 ⊞ μ_sc,η with μ_sc,η the semicircle of radius 2η
(variance η²).

Stieltjes transform. With g(z) = ∫ μ_η(dx)/(z − x), the R-transform
R(g) = √κ0/(1 − g/√κ0) + η² g and z = R(g) + 1/g give the cubic

    (η²/√κ0) g³ − (z/√κ0 + η²) g² + (z − √κ0 + 1/√κ0) g − 1 = 0.

On the support it has a complex-conjugate pair of roots; the density is
ρ_η(x) = |Im g(x ± i0)|/π and the Hilbert transform p.v.∫ρ(y)/(x − y)dy = Re g(x). The support
is where the cubic's discriminant (a quartic in x) is negative.

J(η, ε) = ∫_ε^∞ (x − ε)² μ_η(dx) (eq. 44) and its derivatives are 1-D integrals over the support:

    J2 = ∂_ε J = −2 ∫_ε^∞ (x − ε) ρ_η(x) dx,
    J1 = ∂_η J = 4η ∫_ε^∞ (x − ε) Re g(x) ρ_η(x) dx,

the second from the free heat equation ∂_t g + g ∂_z g = 0 (t = η²):
d/dt ∫ f dμ_t = ∫ f'(x) Re g(x) ρ_t(x) dx. They are computed by Gauss–Legendre quadrature in the
variable θ, x = a + (b − a)(1 − cos θ)/2, which makes the square-root edges smooth; the number
of nodes is doubled until two successive results agree to 1e-13. When ε lies below the support,
J = 1 + κ0 + η² − 2ε√κ0 + ε², J1 = 2η, J2 = 2ε − 2√κ0 exactly.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
from numpy.polynomial import Polynomial

log = logging.getLogger(__name__)

_RTOL = 1e-13
_N0, _NMAX = 32, 1 << 11


def _check(eta, kappa0):
    if not (np.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0 (semicircle radius 2η), got eta={eta!r}")
    if not (np.isfinite(kappa0) and kappa0 > 0):
        raise ValueError(f"kappa0 must be a finite number > 0, got kappa0={kappa0!r}")


def _coefficients(x, eta, kappa0):
    """Coefficients (a, b, c, d) of the cubic a g³ + b g² + c g + d = 0 at real or complex x."""
    s = math.sqrt(kappa0)
    x = np.asarray(x)
    a = np.full_like(x, eta**2 / s, dtype=float)
    b = -(x / s + eta**2)
    c = x - s + 1 / s
    d = -np.ones_like(a)
    return a, b, c, d


def _roots(x, eta, kappa0):
    """The three roots g of the cubic at each real x, shape x.shape + (3,), Newton-polished."""
    x = np.asarray(x, dtype=float)
    a, b, c, d = _coefficients(x.ravel(), eta, kappa0)
    n = x.size
    comp = np.zeros((n, 3, 3), dtype=float)
    comp[:, 0, :] = -np.stack([b / a, c / a, d / a], axis=1)
    comp[:, 1, 0] = 1.0
    comp[:, 2, 1] = 1.0
    r = np.linalg.eigvals(comp).astype(complex)
    A, B, C, Dd = (v[:, None] for v in (a, b, c, d))
    for _ in range(2):  # Newton polish of every root
        f = ((A * r + B) * r + C) * r + Dd
        fp = (3 * A * r + 2 * B) * r + C
        step = np.where(np.abs(fp) > 1e-300, f / np.where(fp == 0, 1, fp), 0)
        r = r - step
    return r.reshape(x.shape + (3,))


def _g_support(x, eta, kappa0):
    """The root with the largest |Im| (the Stieltjes branch on the support), Im ≥ 0."""
    r = _roots(x, eta, kappa0)
    k = np.argmax(np.abs(r.imag), axis=-1)
    g = np.take_along_axis(r, k[..., None], axis=-1)[..., 0]
    return g.real + 1j * np.abs(g.imag)


def stieltjes(x, eta: float, kappa0: float):
    r"""g(x) = ∫ μ_η(dy)/(x − y) with Im g = π ρ_η(x) ≥ 0 (complex array of x's shape).

    On the support Re g(x) is the Hilbert transform p.v.∫ρ_η(y)/(x − y)dy and the branch is the
    complex root of the cubic. Off the support g is real and is the real root of the cubic
    closest to a direct quadrature of ∫ρ_η(y)/(x − y)dy (the quadrature only picks the root).
    """
    _check(eta, kappa0)
    x = np.asarray(x, dtype=float)
    g = _g_support(x, eta, kappa0)
    sup = support(eta, kappa0)
    inside = np.zeros(x.shape, dtype=bool)
    for lo, hi in sup:
        inside |= (x > lo) & (x < hi)
    off = ~inside
    if off.any():
        r = _roots(x[off], eta, kappa0).real
        ref = np.array(
            [
                sum(
                    _integrate(
                        lambda y, gy, x0=x0: (np.abs(gy.imag) / np.pi / (x0 - y))[:, None],
                        lo,
                        hi,
                        eta,
                        kappa0,
                    )[0]
                    for lo, hi in sup
                )
                for x0 in x[off]
            ]
        )
        k = np.argmin(np.abs(r - ref[:, None]), axis=-1)
        g[off] = np.take_along_axis(r, k[:, None], axis=-1)[:, 0]
    return g


def density(x, eta: float, kappa0: float):
    """Density ρ_η(x) of μ_η = μ0 ⊞ μ_sc,η (array of x's shape)."""
    return np.abs(_g_support(np.asarray(x, dtype=float), eta, kappa0).imag) / np.pi


@functools.lru_cache(maxsize=256)
def support(eta: float, kappa0: float) -> tuple[tuple[float, float], ...]:
    """The support of μ_η as a tuple of disjoint intervals (a, b), increasing."""
    _check(eta, kappa0)
    X = Polynomial([0.0, 1.0])
    s = math.sqrt(kappa0)
    a = Polynomial([eta**2 / s])
    b = -(X / s + eta**2)
    c = X - s + 1 / s
    d = Polynomial([-1.0])
    disc = 18 * a * b * c * d - 4 * b**3 * d + b**2 * c**2 - 4 * a * c**3 - 27 * a**2 * d**2
    roots = disc.roots()
    scale = 1 + abs(s) + eta
    real = np.sort(roots[np.abs(roots.imag) < 1e-7 * scale].real)
    dp = disc.deriv()
    polished = []
    for r in real:
        for _ in range(50):  # Newton on the discriminant; bisection-free since roots are simple
            f, fp = disc(r), dp(r)
            if fp == 0:
                break
            step = f / fp
            r -= step
            if abs(step) < 1e-15 * scale:
                break
        polished.append(r)
    pts = np.unique(np.round(np.array(polished), 14))
    intervals = []
    for lo, hi in zip(pts[:-1], pts[1:], strict=False):
        if disc(0.5 * (lo + hi)) < 0:
            intervals.append((float(lo), float(hi)))
    if not intervals:
        raise RuntimeError(f"no support found for eta={eta}, kappa0={kappa0}")
    # merge touching intervals
    merged = [list(intervals[0])]
    for lo, hi in intervals[1:]:
        if lo <= merged[-1][1] + 1e-12 * scale:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


@functools.lru_cache(maxsize=32)
def _gauss(n: int):
    t, w = np.polynomial.legendre.leggauss(n)
    theta = 0.5 * np.pi * (t + 1)  # θ ∈ (0, π)
    return theta, 0.5 * np.pi * w


def _graded(lo: float, hi: float, w: float, towards: str) -> list[float]:
    """Cut points in (lo, hi), geometrically graded (ratio 4) from width w towards lo or hi."""
    cuts, d = [], w
    while d < hi - lo:
        cuts.append(lo + d if towards == "lo" else hi - d)
        d *= 4
    return cuts


def _pieces(lo: float, hi: float, eta: float, kappa0: float) -> list[tuple[float, float]]:
    """[lo, hi] cut into pieces graded geometrically towards both ends and towards interior
    minima of the density, down to the width w = η^{2/3}/10. Near the hard edge of μ0 (κ0 = 1)
    and where the atom's bump meets the bulk (κ0 < 1) the density has features of that width
    once smoothed by the semicircle, which one Gauss rule would resolve slowly."""
    w = 0.1 * eta ** (2 / 3)
    if w >= (hi - lo) / 32:
        return [(lo, hi)]
    centre = [0.5 * (lo + hi)]
    # interior local minima of the density (a cusp where two components have merged)
    x = lo + (hi - lo) * (1 - np.cos(np.linspace(0, np.pi, 513))) / 2
    rho = density(x, eta, kappa0)
    minima = [
        x[i]
        for i in range(2, len(x) - 2)
        if rho[i] < rho[i - 1] and rho[i] <= rho[i + 1] and rho[i] < 0.5 * rho.max()
    ]
    pts = {lo, hi}
    for c in minima or centre:
        pts.update(_graded(lo, c, w, "hi"))
        pts.update(_graded(c, hi, w, "lo"))
        pts.add(c)
    pts.update(p for p in _graded(lo, hi, w, "lo") if p < 0.5 * (lo + hi))
    pts.update(p for p in _graded(lo, hi, w, "hi") if p > 0.5 * (lo + hi))
    pts = sorted(p for p in pts if lo <= p <= hi)
    return list(zip(pts[:-1], pts[1:], strict=False))


def _integrate(f, lo: float, hi: float, eta: float, kappa0: float) -> np.ndarray:
    """∫_lo^hi F(x, g(x)) dx for a vector-valued F (last axis), piecewise (see :func:`_pieces`)."""
    return sum(_integrate_piece(f, a, b, eta, kappa0) for a, b in _pieces(lo, hi, eta, kappa0))


def _integrate_piece(f, lo: float, hi: float, eta: float, kappa0: float) -> np.ndarray:
    """∫_lo^hi F(x, g(x)) dx, Gauss–Legendre in θ, nodes doubled to convergence.

    x = lo + (hi − lo)(1 − cos θ)/2, dx = (hi − lo) sin θ / 2 dθ.
    """
    prev = None
    n = _N0
    while True:
        theta, w = _gauss(n)
        x = lo + (hi - lo) * (1 - np.cos(theta)) / 2
        jac = (hi - lo) * np.sin(theta) / 2
        g = _g_support(x, eta, kappa0)
        val = np.tensordot(w * jac, f(x, g), axes=(0, 0))
        if prev is not None and np.all(np.abs(val - prev) <= _RTOL * (1 + np.abs(val))):
            return val
        if n >= _NMAX:
            log.warning(
                "spectral quadrature not converged to %.0e on [%g, %g] (eta=%g)", _RTOL, lo, hi, eta
            )
            return val
        prev, n = val, 2 * n


def _J_scalar(eta: float, eps: float, kappa0: float) -> tuple[float, float, float]:
    sup = support(eta, kappa0)
    s = math.sqrt(kappa0)
    if eps <= sup[0][0]:
        return 1 + kappa0 + eta**2 - 2 * eps * s + eps**2, 2 * eta, 2 * eps - 2 * s

    def F(x, g):
        rho = np.abs(g.imag) / np.pi
        u = x - eps
        return np.stack([u * u * rho, u * rho, u * g.real * rho], axis=-1)

    tot = np.zeros(3)
    for lo, hi in sup:
        if hi <= eps:
            continue
        tot += _integrate(F, max(lo, eps), hi, eta, kappa0)
    return float(tot[0]), float(4 * eta * tot[2]), float(-2 * tot[1])


def J(eta, eps, kappa0: float):
    r"""J(η, ε) = ∫_ε^∞ (x − ε)² μ_η(dx) and its partial derivatives (eq. 44, 48).

    Parameters
    ----------
    eta : float or array, η > 0 (semicircle radius 2η).
    eps : float or array, the threshold ε (broadcast against ``eta``).
    kappa0 : κ0 > 0.

    Returns
    -------
    (J, dJ_deta, dJ_deps) : floats, or arrays of the broadcast shape.
    """
    eta_b, eps_b = np.broadcast_arrays(np.asarray(eta, float), np.asarray(eps, float))
    out = np.empty(eta_b.shape + (3,))
    for idx in np.ndindex(eta_b.shape):
        e, x = float(eta_b[idx]), float(eps_b[idx])
        _check(e, kappa0)
        if not np.isfinite(x):
            raise ValueError(f"eps must be finite, got eps={x!r}")
        out[idx] = _J_scalar(e, x, kappa0)
    if out.shape == (3,):
        return float(out[0]), float(out[1]), float(out[2])
    return out[..., 0], out[..., 1], out[..., 2]


def moments(eta: float, kappa0: float) -> tuple[float, float, float]:
    """(∫ dμ_η, ∫ x dμ_η, ∫ x² dμ_η) by quadrature; exact values 1, √κ0, 1 + κ0 + η²."""
    _check(eta, kappa0)

    def F(x, g):
        rho = np.abs(g.imag) / np.pi
        return np.stack([rho, x * rho, x * x * rho], axis=-1)

    tot = sum(_integrate(F, lo, hi, eta, kappa0) for lo, hi in support(eta, kappa0))
    return float(tot[0]), float(tot[1]), float(tot[2])


def cube_integral(eta: float, kappa0: float) -> float:
    """∫ ρ_η(x)³ dx, the quantity of the Bayes-optimal input channel (eq. 87)."""
    _check(eta, kappa0)

    def F(x, g):
        rho = np.abs(g.imag) / np.pi
        return (rho**3)[:, None]

    return float(sum(_integrate(F, lo, hi, eta, kappa0)[0] for lo, hi in support(eta, kappa0)))


def replicon_integral(eta: float, eps: float, kappa0: float, n: int = 400) -> float:
    r"""∫∫ μ_η(dx) μ_η(dy) [(ζ(x) − ζ(y))/(x − y)]², ζ(x) = (x − ε)_+ (eqs. 75–76).

    The ratio is the divided difference of ζ, in [0, 1], equal to 1{x > ε} on the diagonal.
    Double Gauss quadrature with ``n`` nodes per piece, pieces split at ε.
    """
    _check(eta, kappa0)
    xs, ws = [], []
    for lo, hi in support(eta, kappa0):
        pieces = [(lo, hi)] if not (lo < eps < hi) else [(lo, eps), (eps, hi)]
        for a, b in pieces:
            theta, w = _gauss(n)
            x = a + (b - a) * (1 - np.cos(theta)) / 2
            jac = (b - a) * np.sin(theta) / 2
            xs.append(x)
            ws.append(w * jac * density(x, eta, kappa0))
    x = np.concatenate(xs)
    w = np.concatenate(ws)
    zeta = np.maximum(x - eps, 0)
    dx = x[:, None] - x[None, :]
    same = np.abs(dx) < 1e-14
    ratio = np.where(
        same,
        (x[:, None] > eps).astype(float),
        (zeta[:, None] - zeta[None, :]) / np.where(same, 1, dx),
    )
    return float(w @ (ratio**2) @ w)
