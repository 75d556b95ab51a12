r"""Basin hopping after the starts: a search for the lowest fine-tuning minimum (issue 27).

The starts of :mod:`hdlora.simulation.starts` each end in the basin they began in, and at large
D the lowest basin of eq. (3) is rarely that of a random or the spectral start: notebook 06,
§ 4, maps how often they reach the lowest objective. :func:`basin_hop` continues from the best
minimum of the starts: it displaces it by a move of the size of the minimiser itself
(:data:`HOP_STEP`), minimises again, and moves to the new minimum when it is lower. A move of
that size keeps part of the direction already found (the new start has overlap ≈ 1/√5 with
it) and still leaves its basin; a random restart keeps none.

:func:`simulate_finetune_search` is :func:`~hdlora.simulation.finetune_only.simulate_finetune`
followed by ``basin_hops`` moves: an opt-in search, measured on the map of notebook 06 before it
can become the default of the simulators (whose committed tables it would change).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.finetune_only import FinetuneExperiment
from hdlora.simulation.lbfgs import FitResult, minimize, warn_not_converged
from hdlora.simulation.measure import finetune_overlap
from hdlora.simulation.starts import SAME_MINIMUM_RTOL, STAGE_ID, seeded_normal

#: a move displaces the best minimum x by HOP_STEP·max(‖x‖, 0.1√D) in a uniformly random
#: direction. Measured on the map of notebook 06 (T = 2, α' = 2, (Q0, Q, M) = (1.5, 1, 0.9),
#: λ' = 0.5, D = 50–400, 8 seeds, 20 moves after the default starts): step 0.5 rarely leaves the
#: basin (reaches the lowest objective in 0.88/0.50/0.50/0.38 of the seeds at D = 50/100/200/
#: 400), step 2 most often (1.00/1.00/0.75/0.75), step 3 less at D = 400 (0.62)
HOP_STEP = 2.0
#: moves after the starts in :func:`simulate_finetune_search` (same map: 10 moves reach the
#: lowest objective in 1.00/1.00/0.62/0.75 of the seeds, 20 in 1.00/1.00/0.75/0.75, 30 in
#: 1.00/1.00/0.88/0.75; each move costs about one random start)
DEFAULT_BASIN_HOPS = 20
#: the random stream of the moves: key (seed, stage, HOP_STREAM, move), apart from the starts'
#: (seed, stage, k) and the spectral start's (seed, stage, 10⁶)
HOP_STREAM = 2 * 10**6


def check_basin_hops(basin_hops) -> int:
    """An integer >= 0 (bools refused)."""
    if (
        isinstance(basin_hops, bool)
        or not isinstance(basin_hops, int | np.integer)
        or basin_hops < 0
    ):
        raise ValueError(f"basin_hops must be an integer >= 0, got basin_hops={basin_hops!r}")
    return int(basin_hops)


def basin_hop(
    objective: Callable[[torch.Tensor], torch.Tensor],
    best: FitResult,
    n_hops: int,
    key: list[int],
    overlap: Callable[[torch.Tensor], float],
    *,
    desc: str = "basin hopping",
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
) -> tuple[FitResult, list[dict]]:
    r"""``n_hops`` basin-hopping moves from the minimum ``best`` of ``objective`` (a function
    of x (D,)).

    Move h minimises from x + :data:`HOP_STEP` max(‖x‖, 0.1√D) ξ/‖ξ‖, x the current minimum
    and ξ ~ N(0, I_D) from the seed sequence ``key + [h]``; the current minimum moves to the
    new one when its objective is finite and lower by more than
    :data:`~hdlora.simulation.starts.SAME_MINIMUM_RTOL` (relative). Returns the final minimum
    (``best`` itself when no move was accepted; otherwise the accepted fit, carrying ``best``'s
    ``starts``, ``best_start`` and ``message``), its ``n_evals`` and ``wall_time`` summed over
    ``best`` and every move, and the moves: dicts of objective, overlap (``overlap(x)``),
    converged, accepted."""
    n_hops = check_basin_hops(n_hops)
    current, hops = best, []
    n_evals, wall_time = best.n_evals, best.wall_time
    D = best.x.shape[0]
    for h in range(n_hops):
        xi = seeded_normal([*key, h], (D,), best.x.device, best.x.dtype)
        size = HOP_STEP * max(float(current.x.norm()), 0.1 * D**0.5)
        fit = minimize(
            objective,
            current.x + size * xi / xi.norm(),
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
            desc=f"{desc} move {h + 1}/{n_hops}",
            warn_failure=False,
        )
        n_evals, wall_time = n_evals + fit.n_evals, wall_time + fit.wall_time
        margin = SAME_MINIMUM_RTOL * max(abs(current.objective), 1e-300)
        accepted = math.isfinite(fit.objective) and fit.objective < current.objective - margin
        hops.append(
            {
                "objective": fit.objective,
                "overlap": overlap(fit.x),
                "converged": fit.converged,
                "accepted": accepted,
            }
        )
        if accepted:
            fit.starts, fit.best_start, fit.message = best.starts, best.best_start, best.message
            current = fit
    current.n_evals, current.wall_time = n_evals, wall_time
    if current is not best and not current.converged:
        warn_not_converged(current, f"{desc} (after {n_hops} moves)", gtol)
    return current, hops


def hops_info(best_of_starts: float, fit: FitResult, hops: list[dict]) -> dict:
    """The record's ``info`` entries of a search: ``ft_n_hops``, ``ft_hops_accepted``,
    ``ft_starts_objective`` (the best start's objective) and ``ft_hops_objective_drop`` (that
    minus the kept objective, ≥ 0)."""
    return {
        "ft_n_hops": len(hops),
        "ft_hops_accepted": sum(h["accepted"] for h in hops),
        "ft_starts_objective": best_of_starts,
        "ft_hops_objective_drop": best_of_starts - fit.objective,
    }


def simulate_finetune_search(
    params: Params,
    effective,
    D: int,
    seed: int = 0,
    *,
    basin_hops: int = DEFAULT_BASIN_HOPS,
    rho: float | None = None,
    n_test: int | None = None,
    device: str | torch.device | None = None,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
    **starts,
) -> Observables:
    r""":func:`~hdlora.simulation.finetune_only.simulate_finetune` (the same experiment, starts
    and record) followed by ``basin_hops`` moves of :func:`basin_hop` from the lowest start.

    ``starts``: ``n_init``, ``spectral_start``, ``teacher_start``, ``w0`` of
    :meth:`FinetuneExperiment.finetune`. The record's ``info`` adds :func:`hops_info`;
    ``wall_time`` includes the moves. ŵ is signed so that m ≥ 0."""
    basin_hops = check_basin_hops(basin_hops)
    t0 = time.perf_counter()
    exp = FinetuneExperiment(params, effective, D, seed, rho=rho, n_test=n_test, device=device)
    solver = dict(gtol=gtol, max_iter=max_iter, progress=progress)
    fit = exp.finetune(**starts, **solver)
    start_objective = fit.objective
    fit, hops = basin_hop(
        lambda w: exp.objective(w),
        fit,
        basin_hops,
        [exp.seed, STAGE_ID["finetune"], HOP_STREAM],
        lambda w: finetune_overlap(w, exp.w_star),
        desc=f"finetune-only D={exp.D}",
        **solver,
    )
    if float(fit.x @ exp.w_star) < 0:
        fit.x = -fit.x
    obs = exp.observables(fit.x, fit, wall_time=time.perf_counter() - t0)
    obs.info.update(hops_info(start_objective, fit, hops))
    return obs
