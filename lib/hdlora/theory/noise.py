r"""Effective noises: how the frozen pre-training enters the fine-tuning (§4.1–4.3, App. C).

For fresh fine-tuning sequences (e = 0) and a linear σ, the pre-training acts on the LoRA as an
additive noise h = z − z* with entries of variance (1 + δ_ab) Δ_eff:

* eq. (25)/(101):  Δ_eff = Δ/2 + Q0 + Q − 2M;
* eq. (26)/(102):  rescaling Ŵ → √β Ŵ (Q → β²Q, M → βM): Δ_eff(β) = Δ/2 + Q0 + β²Q − 2βM,
  minimal at β_min = M/Q, eq. (103): Δ_eff(β_min) = Δ/2 + Q0 − M²/Q;
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


def beta_min(Q, M):
    """The recalibration β_min = M/Q minimising Δ_eff(β), eq. (26)."""
    Q = np.asarray(Q, dtype=float)
    if np.any(Q <= 0):
        raise ValueError(f"Q must be > 0 for the recalibration β = M/Q, got Q={Q!r}")
    return M / Q


def delta_eff_recalibrated(Delta, Q0, Q, M, beta=None):
    """Δ_eff(β) = Δ/2 + Q0 + β²Q − 2βM, eq. (102); β = β_min = M/Q (eq. 103) when None."""
    if beta is None:
        beta = beta_min(Q, M)
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
