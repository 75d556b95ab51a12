r"""What a finite-D run measures (App. D): order parameters, errors, the measured noise.

* :func:`order_parameters`: Q0, Q, M of eq. (8) and q0, q, m of eq. (9) at finite D;
* :func:`errors`: ℰ, ℒ, ℰ', ℒ', ℰ'' (eq. 84) of a two-stage :class:`~hdlora.simulation.
  experiment.Experiment` on its sets;
* :func:`delta_eff_hat`: the measured effective noise of a set of frozen fields (App. C), the
  record's ``Delta_eff_train`` (the name the theory's record uses for the same quantity);
* :func:`finetune_overlap`: o_w.
"""

from __future__ import annotations

import math

import torch

from hdlora.model.losses import (
    finetune_preactivation,
    frozen_preactivation,
    pretrain_preactivation,
    sample_errors,
)


def test_set_size(n_test: int | None, D: int) -> int:
    """The number of fresh test sequences the errors are measured on: ``n_test``, 10 D when
    None; a ValueError names it unless it is an integer ≥ 1."""
    n_test = 10 * D if n_test is None else n_test
    if isinstance(n_test, bool) or int(n_test) != n_test or n_test < 1:
        raise ValueError(f"n_test must be an integer >= 1, got n_test={n_test!r}")
    return int(n_test)


def finetune_overlap(w: torch.Tensor, w_star: torch.Tensor) -> float:
    """o_w = |wᵀw*| / (‖w‖ ‖w*‖), 0 for w = 0."""
    norm = float(w.norm()) * float(w_star.norm())
    return abs(float(w @ w_star)) / norm if norm > 0 else 0.0


def delta_eff_hat(z: torch.Tensor, z_star: torch.Tensor) -> tuple[float, float]:
    r"""Measured effective noise of a set: mean over the samples of
    mean_{a≤b} (z − z*)²_ab / (1 + δ_ab), and its standard error across samples (App. C:
    E (z − z*)²_ab = (1 + δ_ab) Δ_eff under 𝒬, Δ_eff,ActFT on a set selected at z ≈ 0)."""
    T = z.shape[-1]
    iu = torch.triu_indices(T, T, device=z.device)
    h = (z - z_star)[:, iu[0], iu[1]] ** 2
    h = h / (1.0 + (iu[0] == iu[1]).to(h.dtype))
    per = h.mean(dim=1)
    n = per.shape[0]
    se = float(per.std() / n**0.5) if n > 1 else math.nan
    return float(per.mean()), se


@torch.no_grad()
def order_parameters(
    W_star: torch.Tensor, w_star: torch.Tensor, W_hat: torch.Tensor, w_hat: torch.Tensor | None
) -> dict[str, float]:
    r"""Q0, Q, M of eq. (8) and q0, q, m of eq. (9) at this D (q, m only with ŵ).

    D⁻² Tr Ŝ² = ‖ŴᵀŴ‖²_F/(P D²), D⁻² Tr ŜS* = ‖ŴᵀW*‖²_F/(√(P P0) D²),
    Q0 = ‖W*ᵀW*‖²_F/(P0 D²).
    """
    D, P = W_hat.shape
    P0 = W_star.shape[1]
    out = {
        "Q0": float((W_star.T @ W_star).square().sum()) / (P0 * D**2),
        "Q": float((W_hat.T @ W_hat).square().sum()) / (P * D**2),
        "M": float((W_hat.T @ W_star).square().sum()) / ((P * P0) ** 0.5 * D**2),
        "q0": float(w_star @ w_star) / D,
    }
    if w_hat is not None:
        out |= {"q": float(w_hat @ w_hat) / D, "m": float(w_hat @ w_star) / D}
    return out


@torch.no_grad()
def errors(exp, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
    """ℰ, ℒ/N on the pre-training sets of the experiment ``exp``; with ŵ also ℰ', ℒ'/N' and
    ℰ'' (eq. 84), each test error with its standard error across samples."""
    p, c = exp.params, exp.centering
    # the model's own centring: population, or the empirical mean over its training set
    ref_pre = ref_ft = None
    if c == "empirical":
        ref_pre = frozen_preactivation(exp.train.X, W_hat).mean(dim=0)

    def pre(data):
        return sample_errors(pretrain_preactivation(data.X, W_hat, c, ref_pre), data, p)

    test = pre(exp.test)
    out = {
        "test_error": float(test.mean()),
        "train_error": float(pre(exp.train).mean()),
        "test_error_se": float(test.std() / exp.n_test**0.5),
    }
    if w_hat is None:
        return out
    A_ft_train = frozen_preactivation(exp.ft.X, W_hat)
    if c == "empirical":
        chi = exp.ft.X @ w_hat / exp.D**0.5
        ref_ft = (A_ft_train + chi[:, :, None] * chi[:, None, :]).mean(dim=0)

    def fine(data, A=None):
        A = frozen_preactivation(data.X, W_hat) if A is None else A
        z = finetune_preactivation(A, data.X, W_hat, w_hat, c, ref_ft)
        return sample_errors(z, data, p)

    test_ft = fine(exp.test_ft)
    forget = fine(exp.test)  # fine-tuned model on fresh pre-training samples, eq. (84)
    return out | {
        "ft_test_error": float(test_ft.mean()),
        "ft_train_error": float(fine(exp.ft, A_ft_train).mean()),
        "forgetting_error": float(forget.mean()),
        "ft_test_error_se": float(test_ft.std() / exp.n_test**0.5),
        "forgetting_error_se": float(forget.std() / exp.n_test**0.5),
    }
