r"""Several starts per training stage, and the lowest objective kept (App. D).

The fine-tuning objective (3) is not convex in w: at T = 2, α' = 2, D = 60–200 a single random
start often stops at o_w ≈ 0.05–0.4 where the lowest minimum has o_w ≈ 0.7–0.9. Each stage
therefore runs several starts (:func:`assemble_starts`) and keeps the lowest objective
(:func:`best_of_starts`): by default :data:`DEFAULT_N_INIT` starts (fine-tuning 4: the spectral
start of :func:`spectral_init`, the lowest-curvature direction of the objective at w = 0, then 3
random ones; one fine-tuning start costs a few percent of a pre-training; pre-training 2 random
starts: it is the expensive stage, and its landscape (P ≥ D) was not seen to trap L-BFGS).
Random starts do not suffice everywhere: at T = 2, α' = 2, λ' = 0.1 and D = 200, none of 32
random starts reached the minimum of the teacher start (tests/test_simulate_finetune.py,
bench/bench_simulate.py). A teacher start uses the ground truth, so it is a validation device
(does the theory describe the lowest minimum one can find?), not an estimator; it is kept only
when its objective is the lowest. Every record lists each start (objective, overlap, kind) and
warns (:class:`~hdlora.diagnostics.StartsDisagreeWarning`) when a start's overlap differs from
the kept one's by more than :data:`OVERLAP_DISAGREE`.

The fine-tuning stage of both simulators adds to these starts one from the data and a
basin-hopping search (:func:`hdlora.simulation.search.finetune_stage`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from hdlora.diagnostics import StartsDisagreeWarning, warn
from hdlora.model.data import torch_generator
from hdlora.simulation.lbfgs import FitResult, minimize, warn_not_converged
from hdlora.simulation.measure import finetune_overlap

#: the random stream of each stage's starts
STAGE_ID = {"pretrain": 0, "finetune": 1}
#: the record prefix of each stage's starts in ``info``
STAGE_PREFIX = {"pretrain": "pre", "finetune": "ft"}

#: starts per stage when ``n_init`` is None and no warm start is given: pre-training 2 random,
#: fine-tuning the spectral start and 3 random (see the module docstring, and
#: bench/bench_simulate.py for the costs)
DEFAULT_N_INIT = {"pretrain": 2, "finetune": 4}

#: a start that reached another minimum disagrees with the kept one when their overlaps (o_w for
#: the fine-tuning, M/√(Q Q0) for the pre-training) differ by more than this. Measured: distinct
#: pre-training minima (λ = 0.001, D = 40–80, objectives 1e-5 apart) differ in overlap by
#: ≤ 0.006; spurious fine-tuning minima by 0.1–0.8 (T = 2, α' = 2, D = 60–200), 0.2 at
#: T = 3, D = 20
OVERLAP_DISAGREE = 0.05

#: two starts reached the same minimum when their objectives agree to this relative precision
#: (L-BFGS stops at max|∇f| ≤ gtol = 1e-6, so the objective is known far better)
SAME_MINIMUM_RTOL = 1e-7


def check_n_init(n_init, name: str = "n_init") -> int | None:
    """None, or an integer >= 1 (bools refused)."""
    if n_init is None:
        return None
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
        raise ValueError(f"{name} must be an integer >= 1 or None, got {name}={n_init!r}")
    return int(n_init)


def seeded_normal(key: list[int], shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """i.i.d. N(0, 1) of ``shape`` from the seed sequence ``key`` (independent of call order)."""
    gen = torch_generator(np.random.SeedSequence(key))
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x.to(device, dtype)


def spectral_init(
    objective: Callable[[torch.Tensor], torch.Tensor],
    D: int,
    key: list[int],
    device,
    dtype,
) -> torch.Tensor | None:
    r"""The spectral start of the fine-tuning: √D u with u the eigenvector of the lowest
    eigenvalue of the Hessian of the objective at w = 0.

    w = 0 is a stationary point of eq. (3) (w → −w symmetry), and u is the direction in which
    the objective falls fastest away from it: the usual spectral initialisation of
    phase-retrieval-like problems (Hessian-vector products by autograd, ARPACK to 1e-3, from a
    seeded vector, so the start is reproducible). It uses only the training data. None if
    ARPACK fails."""
    import scipy.sparse.linalg as sla

    w0 = torch.zeros(D, device=device, dtype=dtype)

    def hessian_times(v):
        v = torch.as_tensor(np.asarray(v, dtype=np.float64).ravel()).to(device, dtype)
        _, hv = torch.autograd.functional.hvp(objective, w0, v)
        return hv.detach().cpu().numpy().astype(np.float64)

    op = sla.LinearOperator((D, D), matvec=hessian_times, dtype=np.float64)
    v0 = seeded_normal(key, (D,), "cpu", torch.float64).numpy()
    try:
        _, vecs = sla.eigsh(op, k=1, which="SA", tol=1e-3, v0=v0, maxiter=50 * D)
    except sla.ArpackError:
        return None
    u = torch.as_tensor(vecs[:, 0]).to(device, dtype)
    return u / u.norm() * D**0.5


def n_starts(stage: str, n_init: int | None, warm: bool) -> int:
    """How many non-teacher starts a stage runs: ``n_init`` (a warm start and the spectral start
    count), or :data:`DEFAULT_N_INIT` when None (just the warm start when there is one)."""
    n_init = check_n_init(n_init)
    if n_init is not None:
        return n_init
    return 1 if warm else DEFAULT_N_INIT[stage]


def assemble_starts(
    stage: str,
    x0: torch.Tensor | None,
    n_init: int | None,
    random: Callable[[int], torch.Tensor],
    teacher: Callable[[], torch.Tensor] | None,
    spectral: Callable[[], torch.Tensor | None] | None,
    device,
    dtype,
    data: Callable[[], torch.Tensor | None] | None = None,
) -> list[tuple[str, torch.Tensor]]:
    """The (kind, x0) starts of a stage: the warm start ``x0`` if given, the spectral start if
    ``spectral`` is given (and succeeds), random ones ``random(k)``, k = 0, 1, …, up to
    :func:`n_starts` in all, then one more start from the data if ``data`` is given (and
    succeeds; kind "bayes", :func:`hdlora.simulation.search.bayes_spectral_start`), then the
    teacher start if ``teacher`` is given."""
    warm = x0 is not None
    n = n_starts(stage, n_init, warm)
    starts = [("warm", x0.to(device, dtype))] if warm else []
    if spectral is not None and len(starts) < n:
        x = spectral()
        if x is not None:
            starts.append(("spectral", x))
    k = 0
    while len(starts) < n:
        starts.append(("random", random(k)))
        k += 1
    x = data() if data is not None else None
    if x is not None:
        starts.append(("bayes", x))
    if teacher is not None:
        starts.append(("teacher", teacher()))
    return starts


def best_of_starts(
    objective: Callable[[torch.Tensor], torch.Tensor],
    starts: list[tuple[str, torch.Tensor]],
    overlap: Callable[[torch.Tensor], float],
    *,
    desc: str,
    gtol: float,
    max_iter: int,
    progress: bool | None,
) -> FitResult:
    """Minimise ``objective`` from each ``(kind, x0)`` of ``starts`` and keep the lowest.

    The fit returned is the best start's, with ``starts`` listing every start (kind, objective,
    overlap, converged, n_iter, grad_max), ``best_start`` its index, ``n_evals`` and
    ``wall_time`` summed over the starts. A :class:`ConvergenceWarning` is raised only when the
    kept start did not converge; a :class:`StartsDisagreeWarning` (and a note in ``message``)
    when another start's overlap differs from the kept one's by more than
    :data:`OVERLAP_DISAGREE`. A non-finite objective never wins.
    """
    fits = []
    for i, (kind, x0) in enumerate(starts):
        fit = minimize(
            objective,
            x0,
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
            desc=f"{desc} start {i + 1}/{len(starts)} ({kind})",
            warn_failure=False,
        )
        fits.append(fit)
    best = None
    for fit in fits:
        if not math.isfinite(fit.objective):
            continue
        if best is None or fit.objective < best.objective:
            best = fit
    if best is not None and not best.converged:
        # among starts at the same minimum (objectives equal to SAME_MINIMUM_RTOL), prefer one
        # whose gradient reached gtol: the same point, honestly converged
        same = [
            f
            for f in fits
            if f.converged
            and math.isfinite(f.objective)
            and f.objective - best.objective <= SAME_MINIMUM_RTOL * max(abs(best.objective), 1e-300)
        ]
        if same:
            best = min(same, key=lambda f: f.objective)
    best = fits[0] if best is None else best
    best.best_start = next(i for i, f in enumerate(fits) if f is best)
    best.starts = [
        {
            "kind": kind,
            "objective": f.objective,
            "overlap": overlap(f.x),
            "converged": f.converged,
            "n_iter": f.n_iter,
            "grad_max": f.grad_max,
        }
        for (kind, _), f in zip(starts, fits, strict=True)
    ]
    best.n_evals = sum(f.n_evals for f in fits)
    best.wall_time = sum(f.wall_time for f in fits)
    if not best.converged:
        warn_not_converged(best, f"{desc} (best of {len(fits)} starts)", gtol)
    summary = starts_summary(best)
    if summary["starts_disagree"]:
        note = (
            f"starts disagree: overlaps {_fmt(s['overlap'] for s in best.starts)}, objectives "
            f"{_fmt((s['objective'] for s in best.starts), '.8g')} (kept start "
            f"{best.best_start}, {best.starts[best.best_start]['kind']})"
        )
        best.message = f"{best.message}; {note}"
        warn(StartsDisagreeWarning, f"{desc}: {note}")
    return best


def _fmt(values, spec: str = ".3f") -> str:
    return "[" + ", ".join(format(v, spec) for v in values) + "]"


def starts_summary(fit: FitResult) -> dict:
    """How far the starts of a fit ended apart: ``n_starts``, ``best_start``, ``n_minima``
    (distinct objectives at relative precision :data:`SAME_MINIMUM_RTOL`), ``objective_gap``
    (largest objective minus the kept one; ``objective_gap_rel`` divided by |kept|),
    ``overlap_gap`` (largest |overlap − kept overlap|) and ``starts_disagree``: a start that
    reached another minimum (objective above the kept one by more than
    :data:`SAME_MINIMUM_RTOL` relative) has an overlap more than :data:`OVERLAP_DISAGREE` away
    from the kept one's."""
    if not fit.starts:
        return {"n_starts": 0, "starts_disagree": False}
    best = fit.starts[fit.best_start]
    f0 = best["objective"]
    # a start with a non-finite objective (a failed fit) is listed but not compared
    starts = [s for s in fit.starts if math.isfinite(s["objective"])] or [best]
    objectives = sorted(s["objective"] for s in starts)
    scale = max(abs(f0), 1e-300)
    n_minima = 1 + sum(
        1
        for a, b in zip(objectives, objectives[1:], strict=False)
        if b - a > SAME_MINIMUM_RTOL * scale
    )
    obj_gap = max(s["objective"] for s in starts) - f0
    ov_gap = max(abs(s["overlap"] - best["overlap"]) for s in starts)
    # starts at the kept minimum (same objective) do not count: near W = 0 or w = 0 the overlap
    # of one minimum is ill-defined
    ov_gap_other = (
        max(
            abs(s["overlap"] - best["overlap"])
            for s in starts
            if not (s["objective"] - f0 <= SAME_MINIMUM_RTOL * scale)
        )
        if n_minima > 1
        else 0.0
    )
    return {
        "n_starts": len(fit.starts),
        "best_start": fit.best_start,
        "n_minima": n_minima,
        "objective_gap": obj_gap,
        "objective_gap_rel": obj_gap / scale,
        "overlap_gap": ov_gap,
        "starts_disagree": bool(ov_gap_other > OVERLAP_DISAGREE),
    }


def starts_info(fit: FitResult, prefix: str) -> dict:
    """The flat ``info`` entries of a fit's starts: ``{prefix}_start{k}_{field}`` for each start
    and ``{prefix}_{summary}`` (:func:`starts_summary`)."""
    out = {f"{prefix}_{k}": v for k, v in starts_summary(fit).items()}
    for k, start in enumerate(fit.starts):
        for name, value in start.items():
            out[f"{prefix}_start{k}_{name}"] = value
    return out


def fit_finetune(
    objective: Callable[[torch.Tensor], torch.Tensor],
    w_star: torch.Tensor,
    seed: int,
    *,
    desc: str,
    w0: torch.Tensor | None = None,
    n_init: int | None = None,
    teacher_start: bool = False,
    spectral_start: bool = True,
    data_start: Callable[[], torch.Tensor | None] | None = None,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
) -> FitResult:
    """Minimise a fine-tuning objective (3) + λ'‖w‖² over w (D,) from several starts and keep
    the lowest: ``n_init`` starts (None: :data:`DEFAULT_N_INIT` ["finetune"]; the warm start
    ``w0`` alone when given): the warm start, the spectral start (:func:`spectral_init`, unless
    ``spectral_start=False``), random ones of the seed's stream; plus the start
    ``data_start()`` when given and w = w* with ``teacher_start``. ŵ is signed so that m ≥ 0
    (w → −w is an exact symmetry of eq. 3)."""
    D, device, dtype = w_star.shape[0], w_star.device, w_star.dtype
    stage = STAGE_ID["finetune"]

    def spectral():
        return spectral_init(objective, D, [seed, stage, 10**6], device, dtype)

    starts = assemble_starts(
        "finetune",
        w0,
        n_init,
        lambda k: seeded_normal([seed, stage, k], (D,), device, dtype),
        (lambda: w_star.clone()) if teacher_start else None,
        spectral if spectral_start else None,
        device,
        dtype,
        data_start,
    )
    fit = best_of_starts(
        objective,
        starts,
        lambda w: finetune_overlap(w, w_star),
        desc=desc,
        gtol=gtol,
        max_iter=max_iter,
        progress=progress,
    )
    if float(fit.x @ w_star) < 0:
        fit.x = -fit.x
    return fit


def fits_record(fits: dict[str, FitResult]) -> dict:
    """The record's statistics of the kept fits of each stage (``{"pretrain": fit, ...}``):
    ``converged`` (every stage), ``n_iter`` (summed), ``residual`` (the largest finite
    max|∇f|, NaN if none), ``message`` ("stage: message; ...") and ``info`` (each fit's
    objective, grad_max, n_iter, n_evals, converged, and its starts, :func:`starts_info`)."""
    info: dict = {}
    converged, n_iter, messages, grads = True, 0, [], []
    for stage, fit in fits.items():
        converged = converged and fit.converged
        n_iter += fit.n_iter
        messages.append(f"{stage}: {fit.message}")
        if math.isfinite(fit.grad_max):
            grads.append(fit.grad_max)
        info[f"{stage}_objective"] = fit.objective
        info[f"{stage}_grad_max"] = fit.grad_max
        info[f"{stage}_n_iter"] = fit.n_iter
        info[f"{stage}_n_evals"] = fit.n_evals
        info[f"{stage}_converged"] = fit.converged
        info |= starts_info(fit, STAGE_PREFIX[stage]) | fit.search
    return dict(
        converged=converged,
        n_iter=n_iter,
        residual=max(grads) if grads else math.nan,
        message="; ".join(messages),
        info=info,
    )
