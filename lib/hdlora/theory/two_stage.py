r"""The two-stage prediction: pre-training state evolution (Result 4) then the LoRA fine-tuning
state evolution (Result 5) on its fixed point, as one :class:`hdlora.Observables` record."""

from __future__ import annotations

import time

from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory import noise
from hdlora.theory.finetune import finetune
from hdlora.theory.pretrain import pretrain
from hdlora.theory.recalibration import recalibrated

#: the fields of the record that the pre-training stage computes
PRETRAIN_FIELDS = (
    "test_error",
    "test_error_se",
    "train_error",
    "train_error_se",
    "Q_se",
    "M_se",
    "Q_hat",
    "M_hat",
    "V_hat",
    "replicon",
    "replicon_stable",
)


def state_evolution(
    params: Params,
    n_mc: int = 30000,
    seed: int = 0,
    *,
    progress: bool | None = None,
    tol: float = 1e-6,
    method: str = "rqmc",
    beta: float | None = 1.0,
    rho: float | None = None,
) -> Observables:
    """Pre-training then fine-tuning: one :class:`Observables` record (source = "theory").

    ``method``: "rqmc" (default) or "mc", see :func:`~hdlora.theory.pretrain`; "exact" (linear σ)
    solves the pre-training in closed form and the fine-tuning with "rqmc" (its proximal, eq. 64,
    is quartic in χ even for linear σ). ``n_iter`` is the sum of both stages' iterations (each
    one in ``info``); ``converged`` holds when both stages converged; ``message`` joins both
    stages' messages.

    ``beta``: recalibration of the frozen map, Ŵ → √β Ŵ, before the fine-tuning (eq. 26,
    App. E); ``None`` means β* = M/Q of this pre-training. The record's test_error and
    train_error are then the recalibrated map's ℰ(β), ℒ(β) (:func:`~hdlora.theory.recalibration.
    recalibrated`; the unscaled ℰ in ``info["pre_test_error_unscaled"]``), its Q, M are β²Q,
    βM, and ``beta``, ``beta_star`` are set. ``rho``: active fine-tuning (Algorithm 1), see
    :func:`~hdlora.theory.finetune`."""
    t0 = time.perf_counter()
    pre = pretrain(params, n_mc, seed, tol=tol, progress=progress, method=method)
    if beta is None:
        beta = noise.required_beta_star(pre.Q, pre.M, pre.Q0, f"at {params}")
    ft_method = "rqmc" if method == "exact" else method
    ft = finetune(
        params, pre, n_mc, seed, tol=tol, progress=progress, method=ft_method, beta=beta, rho=rho
    )
    if beta != 1.0:
        pre = recalibrated(params, pre, beta, n_mc, seed, method=method)
    return merge_stages(pre, ft).replace(wall_time=time.perf_counter() - t0)


def merge_stages(pre: Observables, ft: Observables) -> Observables:
    """The fine-tuning record with the pre-training's fields, statistics and ``info`` joined."""
    info = {f"pre_{k}": val for k, val in pre.info.items()}
    info |= {f"ft_{k}": val for k, val in ft.info.items()}
    info |= {"pre_n_iter": pre.n_iter, "ft_n_iter": ft.n_iter}
    return ft.replace(
        **{name: getattr(pre, name) for name in PRETRAIN_FIELDS},
        converged=pre.converged and ft.converged,
        n_iter=pre.n_iter + ft.n_iter,
        residual=max(pre.residual, ft.residual),
        message=f"pretrain: {pre.message}; finetune: {ft.message}",
        wall_time=pre.wall_time + ft.wall_time,
        info=info,
    )
