r"""Bayes-optimal (BO) benchmarks (Result 6, App. B). Pre-training part (App. B.1).

The BO overlap Q_BO ∈ [0, Q0] with the extensive target solves two equations:

* input channel, eq. (87), with η² = 1/Q̂ (the law μ_{1/Q̂} of Y = S*/√D + Q̂^{-1/2} Z is the
  free convolution of μ0 with the semicircle of *variance* 1/Q̂, i.e. radius 2/√Q̂ — the
  subscript of μ in (87) is a variance, not the radius of :mod:`hdlora.spectral`'s μ_η):
      Q = Q0 − mmse(Q̂),   mmse(Q̂) = 1/Q̂ − (4π²/3) Q̂⁻² ∫ μ_{1/Q̂}(t)³ dt;
* output channel, eq. (89), softmax: Q̂ = α (T² + T − 2)/(Q0 + Δ/2 − Q).

Substituting the second into the first gives one scalar equation F(Q) = Q0 − mmse(Q̂(Q)) − Q = 0,
solved with a bracketing root finder (Brent) on [0, Q0]: F(0) ≥ 0, F(Q0) < 0 when Δ > 0. With
Δ = 0, Q = Q0 is a root for every α; it is the BO solution (perfect recovery) above the threshold
α_PR = 2(κ̄ − κ̄²/2)/(T² + T − 2), κ̄ = min(κ0, 1), where no smaller root remains.

The BO test error (91) is a Monte Carlo over the channel (90), with its standard error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from hdlora import spectral
from hdlora.activations import activation as activation_fn
from hdlora.params import Params
from hdlora.symmetric import multiplicity, n_entries, to_matrix

log = logging.getLogger(__name__)


def mmse(Q_hat: float, kappa0: float) -> float:
    r"""mmse(Q̂) = 1/Q̂ − (4π²/3) Q̂⁻² ∫ ρ_Y³ for Y = S*/√D + Q̂^{-1/2} GOE (eq. 87)."""
    if not Q_hat > 0:
        raise ValueError(f"Q_hat must be > 0, got Q_hat={Q_hat!r}")
    eta = 1.0 / math.sqrt(Q_hat)
    return 1.0 / Q_hat - 4 * math.pi**2 / (3 * Q_hat**2) * spectral.cube_integral(eta, kappa0)


def output_count(T: int, activation: str) -> int:
    """T² + T − 2 for the softmax (eq. 89): the T(T+1)/2 entries less the direction 11ᵀ, ×2."""
    if activation != "softmax":
        raise NotImplementedError(
            "the Bayes-optimal output channel (89) is given by the paper for the softmax only; "
            f"activation={activation!r} is not covered"
        )
    return T * T + T - 2


def perfect_recovery_threshold(params: Params) -> float:
    """α_PR = 2(κ̄ − κ̄²/2)/(T² + T − 2), κ̄ = min(κ0, 1) (App. B.1; meaningful for Δ = 0)."""
    k = min(params.kappa0, 1.0)
    return 2 * (k - k * k / 2) / output_count(params.T, params.activation)


@dataclass
class BayesPretrainResult:
    """``Q`` = Q_BO, ``Q_hat``, ``mmse`` = Q0 − Q_BO, ``test_error`` E_BO (eq. 91) and its
    ``test_error_se``, ``Q0``, ``perfect_recovery``, ``n_roots`` (sign changes of F found)."""

    params: Params
    Q0: float
    Q: float
    Q_hat: float
    mmse: float
    test_error: float
    test_error_se: float
    perfect_recovery: bool
    n_roots: int


def _F(Q, params, K, A0, Q0):
    Q_hat = params.alpha * K / (A0 - Q)
    return Q0 - mmse(Q_hat, params.kappa0) - Q


def overlap(params: Params, n_grid: int = 64) -> tuple[float, float, bool, int]:
    """(Q_BO, Q̂_BO, perfect_recovery, n_roots) from eqs. (87) and (89)."""
    K = output_count(params.T, params.activation)
    Q0 = params.Q0
    A0 = Q0 + params.Delta / 2
    # grid denser towards Q0, where mmse → 0 when Δ = 0
    u = np.linspace(0.0, 1.0, n_grid)
    grid = Q0 * (1 - (1 - u) ** 2)
    top = Q0 * (1 - 1e-6) if params.Delta == 0 else Q0
    grid[-1] = top
    F = np.array([_F(q, params, K, A0, Q0) for q in grid])
    changes = np.nonzero((F[:-1] > 0) & (F[1:] <= 0))[0]
    if len(changes) == 0:
        if params.Delta == 0 and F[-1] > 0:  # F > 0 up to Q0: only Q = Q0 remains
            return Q0, math.inf, True, 0
        raise RuntimeError(f"no root of the BO equation found for {params}")
    i = changes[0]  # the root reached from the uninformed start Q = 0
    Q = brentq(_F, grid[i], grid[i + 1], args=(params, K, A0, Q0), xtol=1e-14, rtol=1e-13)
    return Q, params.alpha * K / (A0 - Q), False, len(changes)


def pretrain(params: Params, n_mc: int = 200_000, seed: int = 0) -> BayesPretrainResult:
    """BO pre-training: Q_BO (eqs. 87, 89), its MMSE and the test error E_BO (eqs. 90–91)."""
    Q, Q_hat, perfect, n_roots = overlap(params)
    Q0 = params.Q0
    A0 = Q0 + params.Delta / 2
    T = params.T
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    s = multiplicity(T)
    g, zeta = rng.standard_normal((2, int(n_mc), n_entries(T)))
    # (z*, z) with Var z* = s A0, Var z = Cov(z, z*) = s Q (eq. 90): z = √Q g', z* = z + √(A0−Q) ζ
    z = np.sqrt(s * Q) * g
    z_star = z + np.sqrt(s * max(A0 - Q, 0.0)) * zeta
    sigma = activation_fn(params.activation)
    e = ((sigma(to_matrix(z, T)) - sigma(to_matrix(z_star, T))) ** 2).sum(axis=(1, 2))
    return BayesPretrainResult(
        params,
        Q0,
        Q,
        Q_hat,
        Q0 - Q,
        float(e.mean()),
        float(e.std(ddof=1) / math.sqrt(len(e))),
        perfect,
        n_roots,
    )
