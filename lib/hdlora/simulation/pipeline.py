r"""The simulation pipelines (App. D, E): pre-train, recalibrate, (select,) fine-tune, measure.

* :func:`simulate`: one run of the two-stage model at dimension D, with the recalibration
  Ŵ → √β Ŵ of eq. (26) between the stages and, optionally, the active selection of the
  fine-tuning set (Algorithm 1);
* :func:`recalibration_scan`: App. E's protocol, one pre-training fine-tuned at several β, λ'.

Both share one pre-train-and-recalibrate step; the stages are those of
:class:`~hdlora.simulation.experiment.Experiment`.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from hdlora.model.data import Centering, TeacherPrior
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.active import check_rho
from hdlora.simulation.experiment import Experiment
from hdlora.simulation.search import DEFAULT_BASIN_HOPS
from hdlora.simulation.starts import check_n_init
from hdlora.theory import noise


def check_beta(beta) -> float | None:
    """None (β* = M/Q of the run), or a finite number > 0."""
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, int | float | np.floating):
        raise ValueError(f"beta must be a finite number > 0 or None, got beta={beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0 or None, got beta={beta!r}")
    return float(beta)


def _stage_n_init(n_init) -> tuple[int | None, int | None]:
    """``n_init`` of :func:`simulate`: None, one integer for both stages, or (pre, ft)."""
    if isinstance(n_init, tuple | list):
        if len(n_init) != 2:
            raise ValueError(
                f"n_init must be an integer >= 1, None, or a pair (pretrain, finetune), "
                f"got n_init={n_init!r}"
            )
        return check_n_init(n_init[0]), check_n_init(n_init[1])
    n = check_n_init(n_init)
    return n, n


def _recalibrate(W: torch.Tensor, beta: float | None, beta_star: float):
    """(β used, √β W, note): β = β* when None (1, with a note, when β* is undefined: W = 0)."""
    note = None
    if beta is None:
        if math.isnan(beta_star):
            beta, note = 1.0, "beta = None with Q = 0 (W = 0): no recalibration"
        else:
            beta = beta_star
    return beta, (W if beta == 1.0 else math.sqrt(beta) * W), note


def _beta_star(op: dict) -> float:
    """β* = M/Q of a run's unscaled Ŵ (eq. 26; NaN for the zero predictor)."""
    return noise.beta_star(op["Q"], op["M"], op["Q0"])


def _pretrained(params, D, seed, n_pre, teacher_start, W0, data: dict, solver: dict):
    """The step both pipelines share: the experiment of (params, D, seed), its pre-training and
    the order parameters of the unscaled Ŵ."""
    exp = Experiment(params, D, seed, **data)
    fit_pre = exp.pretrain(W0=W0, n_init=n_pre, teacher_start=teacher_start, **solver)
    return exp, fit_pre, exp.order_parameters(fit_pre.x, None)


def _recalibrated_record(obs: Observables, op: dict, beta, note, **changes) -> Observables:
    """The record of a recalibrated run: ``beta`` used, β* and the unscaled Q, M of Ŵ."""
    info = obs.info | {"Q_unscaled": op["Q"], "M_unscaled": op["M"]}
    message = obs.message if note is None else f"{obs.message}; {note}"
    return obs.replace(beta=beta, beta_star=_beta_star(op), info=info, message=message, **changes)


def simulate(
    params: Params,
    D: int,
    seed: int = 0,
    *,
    n_init: int | tuple[int, int] | None = None,
    teacher_start: bool = False,
    spectral_start: bool = True,
    bayes_start: bool = True,
    basin_hops: int = DEFAULT_BASIN_HOPS,
    beta: float | None = 1.0,
    rho: float | None = None,
    W0: torch.Tensor | None = None,
    w0: torch.Tensor | None = None,
    n_test: int | None = None,
    teacher: TeacherPrior = "sphere",
    centering: Centering = "population",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
    finetune: bool = True,
) -> Observables:
    r"""Pre-train, recalibrate, then fine-tune at dimension D and measure everything (App. D).

    Parameters
    ----------
    n_init : starts per stage: None (default) gives
        :data:`~hdlora.simulation.starts.DEFAULT_N_INIT` (pre-training 2, fine-tuning 4 starts;
        a warm start ``W0``/``w0`` alone when given); an integer is used for both stages, a
        pair as (pre-training, fine-tuning). The lowest objective is kept; ``info`` lists each
        start (``pre_start{k}_objective``, ``ft_start{k}_overlap``, …) and whether they
        disagree (:func:`~hdlora.simulation.starts.starts_summary`).
    teacher : "sphere" (default: the draw of eq. 6 rescaled to the norms of the D → ∞ limit,
        q0 = 1, Q0 = 1 + κ0) or "gaussian" (eq. 6 as it stands, whose q0 fluctuates by
        √(2/D)): :func:`~hdlora.model.data.draw_teacher`.
    teacher_start : add a start at the teacher in both stages (W ∝ W* scaled so that Ŝ ∝ S*,
        w = w*): a validation device that uses the ground truth, see the module docstring.
    spectral_start : the first fine-tuning start is the spectral one
        (:func:`~hdlora.simulation.starts.spectral_init`) instead of a random one (default True).
    bayes_start, basin_hops : the fine-tuning's search for its lowest minimum
        (:func:`~hdlora.simulation.search.finetune_stage`): one more start from the data
        (default True) and at most ``basin_hops`` basin-hopping moves from the best start
        (none where the starts agree on one minimum); ``bayes_start=False, basin_hops=0``: the
        starts alone.
    beta : the recalibration Ŵ → √β Ŵ (eq. 26, App. E) applied after the pre-training and
        before the fine-tuning (1: none). None uses β* = M/Q measured on this run's Ŵ. (The
        theory notebooks, like App. E of the paper, pass β explicitly, computed from the
        pre-training state evolution's Q, M.) The record has ``beta`` (the value used),
        ``beta_star`` (M/Q of the unscaled Ŵ), Q, M, ``Delta_eff``, ``test_error`` and
        ``train_error`` of the rescaled Ŵ (a β scan gives ℰ(β) of Fig. 6, left), and the
        unscaled ``info["Q_unscaled"]``, ``info["M_unscaled"]``.
    rho : active fine-tuning (Algorithm 1, e = 0 only): the N' fine-tuning sequences are the
        best of N̄' = round(N'/ρ) fresh candidates by the frozen pre-activation of the
        recalibrated Ŵ (:meth:`Experiment.select_active`); None: the uniform set.

    Returns the :class:`Observables` (source = "simulation"). ``converged`` is False (and a
    :class:`~hdlora.diagnostics.ConvergenceWarning` is raised) if a kept L-BFGS fit did not
    reach ``gtol``; ``residual`` is the largest final max|∇f| of the stages. ``finetune=False``
    stops after the pre-training (and the recalibration): the fine-tuning fields are then NaN
    and no fine-tuning work is done.
    """
    t0 = time.perf_counter()
    beta = check_beta(beta)
    rho = check_rho(rho)
    n_pre, n_ft = _stage_n_init(n_init)
    if rho is not None and params.reuse:
        raise ValueError("rho (active fine-tuning) needs fresh fine-tuning sequences: reuse=False")
    data = dict(n_test=n_test, teacher=teacher, centering=centering, device=device, dtype=dtype)
    solver = dict(gtol=gtol, max_iter=max_iter, progress=progress)
    exp, fit_pre, op = _pretrained(params, D, seed, n_pre, teacher_start, W0, data, solver)
    beta, W_hat, note = _recalibrate(fit_pre.x, beta, _beta_star(op))
    fits = {"pretrain": fit_pre}
    if rho is not None and finetune:
        exp.select_active(W_hat, rho)
    w_hat = None
    if finetune:
        fits["finetune"] = exp.finetune(
            W_hat,
            w0=w0,
            n_init=n_ft,
            teacher_start=teacher_start,
            spectral_start=spectral_start,
            bayes_start=bayes_start,
            basin_hops=basin_hops,
            **solver,
        )
        w_hat = fits["finetune"].x
    obs = exp.observables(W_hat, w_hat, fits, wall_time=time.perf_counter() - t0)
    return _recalibrated_record(obs, op, beta, note)


def recalibration_scan(
    params: Params,
    D: int,
    seed: int = 0,
    *,
    betas: list[float | None],
    lam_fts: list[float] | None = None,
    n_init: int | tuple[int, int] | None = None,
    teacher_start: bool = False,
    spectral_start: bool = True,
    bayes_start: bool = True,
    basin_hops: int = DEFAULT_BASIN_HOPS,
    n_test: int | None = None,
    teacher: TeacherPrior = "sphere",
    centering: Centering = "population",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
) -> list[Observables]:
    r"""The finite-D recalibration protocol of App. E: one pre-training, then for each β of
    ``betas`` (None: β* = M/Q of this Ŵ) and each λ' of ``lam_fts`` (default: params.lam_ft)
    the fine-tuning of the frozen √β Ŵ.

    Returns one :class:`Observables` per (β, λ'), β outermost, each exactly the record of
    :func:`simulate` with the same arguments and ``beta=β`` (its ``params.lam_ft`` is λ'; its
    ``test_error`` is ℰ(β) of Fig. 6, left), at the cost of a single pre-training.
    ``wall_time`` is the pre-training's plus that record's fine-tuning.
    """
    t0 = time.perf_counter()
    betas = [check_beta(b) for b in betas]
    if not betas:
        raise ValueError("betas must list at least one value (a number > 0, or None for β*)")
    lam_fts = [params.lam_ft] if lam_fts is None else [float(x) for x in lam_fts]
    for lam_ft in lam_fts:
        params.replace(lam_ft=lam_ft)  # validates
    n_pre, n_ft = _stage_n_init(n_init)
    data = dict(n_test=n_test, teacher=teacher, centering=centering, device=device, dtype=dtype)
    solver = dict(gtol=gtol, max_iter=max_iter, progress=progress)
    exp, fit_pre, op = _pretrained(params, D, seed, n_pre, teacher_start, None, data, solver)
    t_pre = time.perf_counter() - t0
    records = []
    for beta_arg in betas:
        beta, W_hat, note = _recalibrate(fit_pre.x, beta_arg, _beta_star(op))
        for lam_ft in lam_fts:
            t1 = time.perf_counter()
            fit_ft = exp.finetune(
                W_hat,
                lam_ft,
                n_init=n_ft,
                teacher_start=teacher_start,
                spectral_start=spectral_start,
                bayes_start=bayes_start,
                basin_hops=basin_hops,
                **solver,
            )
            fits = {"pretrain": fit_pre, "finetune": fit_ft}
            obs = exp.observables(W_hat, fit_ft.x, fits, t_pre + time.perf_counter() - t1)
            records.append(
                _recalibrated_record(obs, op, beta, note, params=params.replace(lam_ft=lam_ft))
            )
    return records
