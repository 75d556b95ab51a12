r"""Sweeps of the two-stage prediction that reuse work (Results 4–5).

:func:`sweep` evaluates a grid of points that share one pre-training law per value of the
pre-training parameters (λ and the rest of :class:`hdlora.Params`): each pre-training
(eqs. 46–54) is solved once, and the fine-tuning (eqs. 67–72) of every (λ', α') is solved on it.
Work is reused along the grid:

* common random numbers: every point uses the samples of the same ``seed``, so the Monte-Carlo
  noise of neighbouring points is correlated and the curves are smooth (their differences are
  more precise than the points);
* continuation: each pre-training starts from its neighbour's (Q, M, V), each fine-tuning from
  its neighbour's (m, q, v) (the same (α', λ') at the previous λ, else the previous λ' at this
  λ).

The result is a tidy :class:`pandas.DataFrame`, one row per point (Observables.to_dict(): the
parameters, the observables with their standard errors, the solver statistics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from tqdm import tqdm

from hdlora.observables import Observables
from hdlora.params import EffectivePretraining, Params
from hdlora.progress import progress_enabled
from hdlora.theory import noise
from hdlora.theory.finetune import finetune
from hdlora.theory.pretrain import pretrain
from hdlora.theory.recalibration import recalibrated
from hdlora.theory.two_stage import merge_stages


def sweep(
    params: Params,
    *,
    lam: Sequence[float] | None = None,
    lam_ft: Sequence[float] | None = None,
    alpha_ft: Sequence[float] | None = None,
    pretraining: EffectivePretraining | Sequence[EffectivePretraining] | None = None,
    beta: float | None = 1.0,
    beta_scale: float | Sequence[float] = 1.0,
    rho: float | None = None,
    n_mc: int = 30000,
    seed: int = 0,
    method: str = "rqmc",
    tol: float = 1e-6,
    select: bool = True,
    progress: bool | None = None,
):
    r"""The prediction on the grid λ × λ' × α' (each defaulting to the value in ``params``).

    Parameters
    ----------
    params : the other parameters of every point.
    lam, lam_ft, alpha_ft : grid values of λ, λ', α'.
    pretraining : an :class:`EffectivePretraining` or a sequence of them (Figures 2, 4, 5: a
        grid in Δ_eff): then ``lam`` must be None and no pre-training is solved (the row's
        pre-training fields are the given Q0, Q, M, V); the sequence is the outer loop.
    beta : recalibration Ŵ → √β Ŵ of every frozen map (eq. 26); ``None`` is β* = M/Q of each
        pre-training. The rows' pre-training errors are then ℰ(β), ℒ(β)
        (:func:`~hdlora.theory.recalibration.recalibrated`).
    beta_scale : multiplies β (Figure 6: ``beta=None, beta_scale=0.8`` is β = 0.8 β*); a
        sequence of scales is a grid (inside λ: each pre-training is solved once), recorded in
        the column ``beta_scale``.
    rho : active fine-tuning (Algorithm 1) with labelling ratio ρ, see
        :func:`~hdlora.theory.finetune`; ``None`` is the uniform selection.
    n_mc, seed, method, tol : as in :func:`~hdlora.theory.state_evolution` (the same samples
        for every point: common random numbers; "exact" is the closed-form linear pre-training,
        with "rqmc" fine-tuning).
    select : fixed-point selection of :func:`~hdlora.theory.finetune` (False halves the cost of
        the fine-tuning when the informed point is known to be the relevant one).
    progress : one bar over the points (the solvers' own bars are off).

    Returns a :class:`pandas.DataFrame` with one row per point, in grid order (λ outer, then the
    β scale, α', λ'), plus the column ``wall_time`` of each point's solves.
    """
    import pandas as pd

    outer, scales, lam_fts, alpha_fts = _grid(
        params, lam, lam_ft, alpha_ft, pretraining, beta_scale
    )
    n_points = len(outer) * len(scales) * len(lam_fts) * len(alpha_fts)
    bar = tqdm(total=n_points, desc="sweep", disable=not progress_enabled(progress))
    rows: list[dict] = []
    x_pre = None
    x_ft: dict = {}  # (β scale, α', λ') -> last (m, q, v): continuation along λ
    solver = dict(tol=tol, method="rqmc" if method == "exact" else method, select=select, rho=rho)
    try:
        for lam_value, eff in outer:
            t0 = time.perf_counter()
            p_pre = params.replace(lam=lam_value)
            if eff is None:
                pre = pretrain(p_pre, n_mc, seed, tol=tol, x0=x_pre, method=method, progress=False)
                if pre.Q > 0 and pre.V > 0:
                    x_pre = (pre.Q, pre.M, pre.V)
            else:
                pre = eff
            b0, pre_rows = _recalibrations(p_pre, pre, beta, scales, n_mc, seed, method)
            t_pre = time.perf_counter() - t0
            for scale in scales:
                x_prev = None  # continuation along λ' within this λ
                for a_ft in alpha_fts:
                    for lft in lam_fts:
                        t1 = time.perf_counter()
                        p = p_pre.replace(alpha_ft=a_ft, lam_ft=lft)
                        # the same (α', λ', β scale) at the previous λ is the closest neighbour
                        x0 = x_ft.get((scale, a_ft, lft)) or x_prev
                        ft = finetune(
                            p, pre, n_mc, seed, x0=x0, progress=False, beta=b0 * scale, **solver
                        )
                        if math.isfinite(p.lam_ft) and ft.m > 0 and ft.converged:
                            x_prev = x_ft[(scale, a_ft, lft)] = (ft.m, ft.q, ft.v)
                        pre_row = pre_rows[scale]
                        rec = merge_stages(pre_row, ft) if pre_row is not eff else ft
                        rec = rec.replace(wall_time=t_pre + time.perf_counter() - t1)
                        rows.append(rec.to_dict() | {"beta_scale": scale})
                        t_pre = 0.0
                        bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(rows)


def _grid(params: Params, lam, lam_ft, alpha_ft, pretraining, beta_scale):
    """The loops of :func:`sweep`: (λ, effective pre-training) outer pairs, β scales, λ', α'."""
    lams = [params.lam] if lam is None else list(lam)
    lam_fts = [params.lam_ft] if lam_ft is None else list(lam_ft)
    alpha_fts = [params.alpha_ft] if alpha_ft is None else list(alpha_ft)
    scales = [beta_scale] if isinstance(beta_scale, int | float) else list(beta_scale)
    for scale in scales:
        if isinstance(scale, bool) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"beta_scale must be finite numbers > 0, got beta_scale={scale!r}")
    if pretraining is not None and lam is not None:
        raise ValueError("give either a grid of lam (pre-training solved) or `pretraining`")
    if pretraining is None:
        outer = [(lam_value, None) for lam_value in lams]
    else:
        effs = [pretraining] if isinstance(pretraining, EffectivePretraining) else pretraining
        outer = [(params.lam, eff) for eff in effs]
    return outer, scales, lam_fts, alpha_fts


def _recalibrations(p_pre: Params, pre, beta, scales, n_mc, seed, method):
    """β0 (``beta``, or β* = M/Q of ``pre`` when None) and the pre-training row of each β scale:
    ℰ(β), ℒ(β) of every β = β0 · scale ≠ 1 from one draw and one proximal."""
    b0 = beta
    if b0 is None:
        b0 = noise.required_beta_star(pre.Q, pre.M, pre.Q0, f"at {p_pre}")
    pre_rows = {scale: pre for scale in scales}
    todo = [scale for scale in scales if b0 * scale != 1.0]
    if isinstance(pre, Observables) and todo:
        recs = recalibrated(p_pre, pre, [b0 * sc for sc in todo], n_mc, seed, method=method)
        pre_rows.update(zip(todo, recs, strict=True))
    return b0, pre_rows
