r"""The student attention of eq. (1) and the two training objectives, eqs. (2)–(3).

Student: ŷ(X; W, w) = σ(A − E_X A) X with A = D⁻¹ X (P^{-1/2} W Wᵀ + w wᵀ) Xᵀ.

Per-sample loss: D⁻¹‖ŷ − y‖²_F = Tr(E G Eᵀ), E = σ(z) − σ(z*), G = X Xᵀ/D (exact, see
:mod:`hdlora.model.data`). Objectives (sums over the set, as in the paper):

* pre-training, eq. (2): ℒ(W) + λ‖W‖²_F, W ∈ R^{D×P}, w = 0;
* LoRA fine-tuning, eq. (3): ℒ'(w) + λ'‖w‖², w ∈ R^D, W = Ŵ frozen.

The frozen part D⁻¹XŜXᵀ of the fine-tuning pre-activation is computed once
(:func:`frozen_preactivation`), so a fine-tuning evaluation costs O(N' T D).
"""

from __future__ import annotations

import torch

from hdlora.model.activations import activation
from hdlora.model.data import (
    Centering,
    SequenceSet,
    center,
    population_center,
    quadratic_preactivation,
)
from hdlora.params import Params


def sample_errors(z: torch.Tensor, data: SequenceSet, params: Params) -> torch.Tensor:
    """D⁻¹‖σ(z)X − y‖²_F for each sequence: Tr(E G Eᵀ) with E = σ(z) − σ(z*); shape (n,)."""
    E = activation(params.activation)(z) - data.target
    return ((E @ data.gram) * E).sum(dim=(-1, -2))


def pretrain_preactivation(
    X: torch.Tensor,
    W: torch.Tensor,
    centering: Centering = "population",
    ref_center: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""z = A − E_X A for the pre-trained student (w = 0), shape (n, T, T), eq. (11).

    ``ref_center``: a frozen (T, T) empirical centring (from the training set) to use instead of
    the mean over X, for evaluating an empirically centred model on other sequences.
    """
    A = quadratic_preactivation(X, W)
    if centering == "empirical" and ref_center is not None:
        return A - ref_center
    return center(A, population_center(W), centering)


def frozen_preactivation(X: torch.Tensor, W_hat: torch.Tensor) -> torch.Tensor:
    """The uncentred frozen part D⁻¹ X Ŝ Xᵀ of the fine-tuning pre-activation, (n, T, T)."""
    return quadratic_preactivation(X, W_hat)


def finetune_preactivation(
    A_frozen: torch.Tensor,
    X: torch.Tensor,
    W_hat: torch.Tensor,
    w: torch.Tensor,
    centering: Centering = "population",
    ref_center: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""z = A − E_X A with A = A_frozen + χχᵀ, χ = D^{-1/2} X w; shape (n, T, T).

    With population centring this is z_Ŝ + χχᵀ − q I_T (q = ‖w‖²/D), the argument of σ in
    eq. (63).
    """
    D = X.shape[-1]
    chi = X @ w / D**0.5
    A = A_frozen + chi[:, :, None] * chi[:, None, :]
    if centering == "empirical" and ref_center is not None:
        return A - ref_center
    c = population_center(W_hat, w) if centering == "population" else None
    return center(A, c, centering)


def pretrain_objective(
    W: torch.Tensor, data: SequenceSet, params: Params, centering: Centering = "population"
) -> torch.Tensor:
    """Eq. (2) plus ridge: Σ_μ D⁻¹‖ŷ(X_μ; W, 0) − y_μ‖²_F + λ‖W‖²_F."""
    z = pretrain_preactivation(data.X, W, centering)
    return sample_errors(z, data, params).sum() + params.lam * (W * W).sum()


def finetune_objective(
    w: torch.Tensor,
    A_frozen: torch.Tensor,
    W_hat: torch.Tensor,
    data: SequenceSet,
    params: Params,
    centering: Centering = "population",
) -> torch.Tensor:
    """Eq. (3) plus ridge: Σ_μ D⁻¹‖ŷ(X'_μ; Ŵ, w) − y'_μ‖²_F + λ'‖w‖²."""
    z = finetune_preactivation(A_frozen, data.X, W_hat, w, centering)
    return sample_errors(z, data, params).sum() + params.lam_ft * (w @ w)
