r"""Active fine-tuning, Algorithm 1 (§4, App. D): label only the candidates whose frozen
attention is closest to σ(0).

:func:`active_order` is steps 1–3 of the algorithm, shared by both simulators:
:func:`select_active` applies it to fresh candidate sequences of a two-stage
:class:`~hdlora.simulation.experiment.Experiment` (scored by the frozen pre-activation of Ŵ),
:class:`~hdlora.simulation.finetune_only.FinetuneExperiment` to candidate fields drawn from 𝒬.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from hdlora.model.activations import activation
from hdlora.model.data import (
    SequenceSet,
    draw_noise,
    draw_sequences,
    finetune_set,
    torch_generator,
)
from hdlora.model.losses import pretrain_preactivation
from hdlora.simulation.measure import delta_eff_hat


def check_rho(rho) -> float | None:
    """None (uniform selection), or a labelling ratio ρ = N'/N̄' ∈ (0, 1]."""
    if rho is None:
        return None
    if isinstance(rho, bool) or not isinstance(rho, int | float | np.floating):
        raise ValueError(f"rho must be a number in (0, 1] or None, got rho={rho!r}")
    if not (0 < rho <= 1):
        raise ValueError(f"rho must be a number in (0, 1] or None, got rho={rho!r}")
    return float(rho)


def active_order(z: torch.Tensor, n_keep: int, activation_name: str) -> torch.Tensor:
    """Algorithm 1, steps 1–3: the indices of the ``n_keep`` candidates whose frozen attention
    σ(z_μ) is closest to σ(0) in Frobenius norm, in increasing index order (so that ρ = 1 keeps
    the set as drawn)."""
    sigma = activation(activation_name)
    score = (sigma(z) - sigma(torch.zeros_like(z[:1]))).square().sum(dim=(-1, -2))
    keep = torch.argsort(score, stable=True)[:n_keep]
    return torch.sort(keep).values


def select_active(exp, W_hat: torch.Tensor, rho: float) -> SequenceSet:
    r"""Algorithm 1: replace the fine-tuning set by the N' best of N̄' = round(N'/ρ) fresh
    candidate sequences (e = 0 only).

    The candidates (X, ξ) come from their own random stream (the uniform set is unchanged);
    each is scored by ‖σ(z_μ) − σ(0)‖²_F with z_μ the frozen pre-activation of ``W_hat``
    (the map that will be fine-tuned, i.e. after any recalibration), the N' lowest are kept
    and only they are labelled. ``exp.selection_info`` records the measured effective noise
    of the pool (:func:`~hdlora.simulation.measure.delta_eff_hat`). Returns the new set (also
    ``exp.ft``)."""
    rho = check_rho(rho)
    if rho is None:
        raise ValueError("rho must be a number in (0, 1], got rho=None")
    if exp.params.reuse:
        raise ValueError(
            "active fine-tuning (rho) needs fresh fine-tuning sequences: reuse must be False"
        )
    n = exp.sizes.N_ft
    n_cand = max(round(n / rho), n)
    gen = torch_generator(np.random.SeedSequence([exp.seed, 3]))
    X = draw_sequences(n_cand, exp.D, exp.params.T, gen)
    xi = draw_noise(n_cand, exp.params.T, exp.params.Delta, gen)
    conv = dict(device=exp.device, dtype=exp.dtype)
    pool = finetune_set(
        exp.teacher.to(device="cpu", dtype=torch.float64),
        exp.params,
        n_cand,
        None,
        exp.centering,
        reuse_from=SimpleNamespace(n=n_cand, X=X, xi=xi),
    ).to(**conv)
    with torch.no_grad():
        z_pool = pretrain_preactivation(pool.X, W_hat, exp.centering)
        keep = active_order(z_pool, n, exp.params.activation)
        pool_d, pool_se = delta_eff_hat(z_pool, pool.z_star_ext)
    keep = keep.cpu()
    chosen = finetune_set(
        exp.teacher.to(device="cpu", dtype=torch.float64),
        exp.params,
        n,
        None,
        exp.centering,
        reuse_from=SimpleNamespace(n=n, X=X[keep], xi=xi[keep]),
    )
    exp.ft = chosen.to(**conv)
    exp.rho, exp.selection = rho, "active"
    exp.selection_info = {
        "n_candidates": n_cand,
        "Delta_eff_pool": pool_d,
        "Delta_eff_pool_se": pool_se,
    }
    return exp.ft
