r"""Effective noises: how the frozen pre-training enters the fine-tuning (§4.1–4.3, App. C).

For fresh fine-tuning sequences (e = 0) and a linear σ, the pre-training acts on the LoRA as an
additive noise h = z − z* with entries of variance (1 + δ_ab) Δ_eff:

* eq. (25)/(101):  Δ_eff = Δ/2 + Q0 + Q − 2M;
* eq. (26)/(102):  rescaling Ŵ → √β Ŵ (Q → β²Q, M → βM): Δ_eff(β) = Δ/2 + Q0 + β²Q − 2βM,
  minimal at β* = M/Q, eq. (103): Δ_eff(β*) = Δ/2 + Q0 − M²/Q (undefined for the zero
  predictor, Q = 0);
* eq. (28)/(105):  active fine-tuning (sequences with z ≈ 0): Δ_eff,ActFT = Δ/2 + Q0 − M²/Q;
* eq. (27)/(107)–(108): reused sequences (e = 1), linear σ, where the pre-training proximal is
  z − z* = (z̃ − z*)/(1 + 4V/T²): Δ_eff(e = 1) = Δ_eff/(1 + 4V/T²)².

Each function takes the order parameters and returns a float (arrays broadcast).
"""

from __future__ import annotations

import numpy as np


def delta_eff(Delta, Q0, Q, M):
    """Δ_eff = Δ/2 + Q0 + Q − 2M, eqs. (25), (101)."""
    return Delta / 2 + Q0 + Q - 2 * M


#: the pre-training is the zero predictor when Q <= ZERO_PREDICTOR_Q · Q0: exactly above λ_c, or a
#: solver's result within rounding of it; β* = M/Q is a ratio of rounding errors there
ZERO_PREDICTOR_Q = 1e-12


def beta_star(Q, M, Q0=1.0):
    """The recalibration β* = M/Q minimising Δ_eff(β), eq. (26); NaN (undefined) where the
    pre-training is the zero predictor, Q <= :data:`ZERO_PREDICTOR_Q` · Q0 (arrays broadcast)."""
    Q, M = np.asarray(Q, dtype=float), np.asarray(M, dtype=float)
    if np.any(Q < 0) or np.any(np.asarray(Q0) <= 0):
        raise ValueError(f"need Q >= 0 and Q0 > 0 for β* = M/Q, got Q={Q!r}, Q0={Q0!r}")
    defined = Q > ZERO_PREDICTOR_Q * np.asarray(Q0, dtype=float)
    out = np.where(defined, M / np.where(defined, Q, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def required_beta_star(Q, M, Q0, where: str) -> float:
    """β* = M/Q (eq. 26) where ``beta=None`` asks for it: a ValueError naming ``where`` (the
    pre-training it belongs to) when it is undefined, at the zero predictor."""
    b = beta_star(Q, M, Q0)
    if np.isnan(b):
        raise ValueError(
            f"beta=None: β* = M/Q is undefined, the pre-training {where} is the zero predictor "
            f"(Q = {Q:.3g}); search lam below lambda_c"
        )
    return b


def delta_eff_recalibrated(Delta, Q0, Q, M, beta=None):
    """Δ_eff(β) = Δ/2 + Q0 + β²Q − 2βM, eq. (102); β = β* = M/Q (eq. 103) when None."""
    if beta is None:
        beta = beta_star(Q, M, Q0)
    return Delta / 2 + Q0 + beta**2 * Q - 2 * beta * M


def delta_eff_active(Delta, Q0, Q, M):
    """Δ_eff,ActFT = Var(z − z* | z = 0) off the diagonal = Δ/2 + Q0 − M²/Q, eqs. (28), (105)."""
    Q = np.asarray(Q, dtype=float)
    if np.any(Q <= 0):
        raise ValueError(f"Q must be > 0 to condition on z, got Q={Q!r}")
    return Delta / 2 + Q0 - M**2 / Q


def delta_eff_reused(Delta, Q0, Q, M, V, T):
    """Δ_eff(e = 1) = Δ_eff / (1 + 4V/T²)², eqs. (27), (107)–(108) (linear σ)."""
    if np.any(np.asarray(V) < 0):
        raise ValueError(f"V must be >= 0, got V={V!r}")
    if T < 2:
        raise ValueError(f"T must be an integer >= 2, got T={T!r}")
    return delta_eff(Delta, Q0, Q, M) / (1 + 4 * V / T**2) ** 2
