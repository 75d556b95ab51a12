r"""Replicon (local stability) conditions of App. A.6, eqs. (75)–(78): both stages.

Fine-tuning, eq. (78):  α' E‖(v ∇²ψ(prox))⁻¹ + I_T‖²_F < 1  (:func:`finetune_replicon`).

Pre-training, eq. (75) as printed:

    2α E‖(V ∇²Ψ(Prox))⁻¹ + I_L‖²_F · ∫∫ μ(dx) μ(dy) (ζ(x) − ζ(y))² / (V̂² (x − y)²) < 1,

with ∇²Ψ the Hessian in the L free entries a ≤ b, μ = μ_{√Q̂/M̂}, ζ(x) = (x − 2√κλ/M̂)_+.

Two corrections, both checked numerically in ``notebooks/02_pretraining_theory.py``:

1. Coordinates. The penalty of Ψ carries the weights 1/(2V s_ab), s_ab = 1 + δ_ab, so in the
   entries h_ab, V∇²Ψ → −diag(1/s_ab) (not −I_L) as V → 0 and (V∇²Ψ)⁻¹ + I_L → diag(1 − s_ab).
   In the coordinates u_ab = h_ab/√s_ab of the output channel (47), where the penalty is
   ‖ũ − u‖²/(2V), the Hessian is S^{1/2}∇²Ψ S^{1/2} (S = diag(s_ab)) and the V → 0 limit is
   −I_L, as for the fine-tuning condition (78).
2. Normalisation. The input factor must be divided by V²: V of eq. (53) is the mean derivative of
   the input denoiser, V = V̂⁻¹ ∫∫ μ(dx)μ(dy) (ζ(x) − ζ(y))/(x − y) (an identity: both sides equal
   J1/(2V̂η)), and the output factor E‖∂g_out/∂ω‖² = E‖(V∇²Ψ)⁻¹ + I‖²/V². The corrected condition

       2α E‖(V ∇²_u Ψ)⁻¹ + I_L‖²_F · ∫∫(Δζ)² dμ dμ / (V̂ V)² < 1

   reduces to the form of (78) when the denoiser is linear (then ∫∫(Δζ)² = (V̂V)²).

For the pre-training (:func:`pretrain_replicon`), ``value`` is the corrected condition and
``paper_value`` eq. (75) as printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hdlora.params import Params
from hdlora.theory import spectral
from hdlora.theory.symmetric import multiplicity


@dataclass
class Replicon:
    """``value`` (< 1: stable), ``stable``, the two factors, and ``paper_value`` (eq. 75 as
    printed)."""

    value: float
    stable: bool
    output_factor: float
    input_factor: float
    paper_value: float


def output_factor(V: float, hessian_F: np.ndarray, T: int, isotropic: bool = True) -> float:
    r"""E‖(V ∇²Ψ)⁻¹ + I_L‖²_F with ∇²Ψ = −``hessian_F`` (n, L, L); isotropic: S^{1/2}·S^{1/2}."""
    L = hessian_F.shape[-1]
    H = -hessian_F
    if isotropic:
        r = np.sqrt(multiplicity(T))
        H = H * r[:, None] * r[None, :]
    M = np.linalg.inv(V * H) + np.eye(L)
    return float((M * M).sum(axis=(-1, -2)).mean())


def pretrain_replicon(params: Params, V, M_hat, Q_hat, V_hat, hessian_F) -> Replicon:
    """Eq. (75) corrected (``value``, see the module docstring) and as printed (``paper_value``).

    ``input_factor`` is ∫∫(Δζ)² dμ dμ / (V̂V)² (≥ 1 by Jensen's inequality)."""
    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(params.kappa) * params.lam / M_hat
    dd2 = spectral.replicon_integral(eta, eps, params.kappa0)
    out_iso = output_factor(V, hessian_F, params.T, isotropic=True)
    out_paper = output_factor(V, hessian_F, params.T, isotropic=False)
    inp = dd2 / (V_hat * V) ** 2
    value = 2 * params.alpha * out_iso * inp
    return Replicon(value, value < 1, out_iso, inp, 2 * params.alpha * out_paper * dd2 / V_hat**2)


def finetune_replicon(alpha_ft: float, v: float, hessian_F: np.ndarray) -> Replicon:
    r"""Eq. (78): α' E‖(v ∇²ψ)⁻¹ + I_T‖²_F with ∇²ψ = −``hessian_F`` (n, T, T) at the proximal.

    ``paper_value`` equals ``value`` (eq. 78 needs no correction); the factors are the output
    factor E‖·‖²_F and 1 (the LoRA input channel is a ridge)."""
    T = hessian_F.shape[-1]
    M = np.linalg.inv(-v * hessian_F) + np.eye(T)
    out = float((M * M).sum(axis=(-1, -2)).mean())
    value = alpha_ft * out
    return Replicon(value, value < 1, out, 1.0, value)
