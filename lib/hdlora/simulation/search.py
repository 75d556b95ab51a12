r"""The fine-tuning stage of both simulators: the starts, one start from the data, and a
basin-hopping search from the best minimum (issue 27).

The starts of :mod:`hdlora.simulation.starts` each end in the basin they began in, and at large
D the lowest basin of eq. (3) is rarely that of a random or the spectral start: notebook 06,
§ 4, maps how often they reach the lowest objective. Two additions find it without the teacher:

* a start from the data themselves (:func:`bayes_spectral_start`): the leading eigenvector of
  Σ_μ X_μᵀ K_μ X_μ / D, each sequence weighted by K_μ = I − q0 E[χχᵀ | y_μ]⁻¹, the posterior of
  its χ*_μ = X_μ w*/√D given its labels (the spectral method of multi-index models, with the
  preprocessing estimated from the data, :func:`bayes_preprocessing`). Where the Hessian's
  spectral start (:func:`~hdlora.simulation.starts.spectral_init`) sees only the curvature at
  w = 0, this one reads the labels;
* :func:`basin_hop`, from the best minimum of the starts: it displaces it by a move of the size
  of the minimiser itself (:data:`HOP_STEP`), minimises again, and moves to the new minimum when
  it is lower. A move of that size keeps part of the direction already found (the new start has
  overlap ≈ 1/√5 with it) and still leaves its basin; a random restart keeps none. The search
  stops when :data:`SETTLED_MOVES` moves in a row found nothing lower (it has settled), or after
  ``basin_hops`` moves. It makes no move where the starts already agree (at least
  :data:`AGREEING_STARTS` of them in one minimum, :func:`starts_agree`): there the moves would
  cost three times the starts and, measured, find nothing.

:func:`finetune_stage` runs both by default (``bayes_start=True``, ``basin_hops`` =
:data:`DEFAULT_BASIN_HOPS`); ``bayes_start=False, basin_hops=0`` is the former default, the
starts alone. Notebook 06, § 4, measures both on its map, and bench/bench_simulate.py what the
search costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from hdlora.diagnostics import ConvergenceWarning, warn
from hdlora.simulation.lbfgs import FitResult, minimize, warn_not_converged
from hdlora.simulation.measure import finetune_overlap
from hdlora.simulation.starts import (
    SAME_MINIMUM_RTOL,
    STAGE_ID,
    check_n_init,
    fit_finetune,
    seeded_normal,
    starts_summary,
)
from hdlora.theory.symmetric import multiplicity, positions

#: a move displaces the best minimum x by HOP_STEP·max(‖x‖, 0.1√D) in a uniformly random
#: direction. Measured on the map of notebook 06 (T = 2, α' = 2, (Q0, Q, M) = (1.5, 1, 0.9),
#: λ' = 0.5, D = 50–400, 8 seeds, 20 moves after the default starts): step 0.5 rarely leaves the
#: basin (reaches the lowest objective in 0.88/0.50/0.50/0.38 of the seeds at D = 50/100/200/
#: 400), step 2 most often (1.00/1.00/0.75/0.75), step 3 less at D = 400 (0.62)
HOP_STEP = 2.0
#: the most moves after the starts in :func:`finetune_stage` (same map, without the Bayes start,
#: the moves always made: 10 moves reach the lowest objective in 1.00/1.00/0.62/0.75 of the
#: seeds, 20 in 1.00/1.00/0.75/0.75, 30 in 1.00/1.00/0.88/0.75; each move costs about one random
#: start). A search stops earlier once settled (:data:`SETTLED_MOVES`), so the cap only bounds
#: one still descending, which then warns
DEFAULT_BASIN_HOPS = 30
#: a search has settled, and stops, when SETTLED_MOVES moves in a row did not lower the
#: objective; one still descending after its last move warns (more moves may find a lower one).
#: Measured on the map of notebook 06 (λ' = 0.5, D = 200, 8 seeds): stopping after 5 such moves
#: reached the lowest objective in 6 of 8 runs (moves were still accepted at moves 9 and 14),
#: after 10 in 8 of 8
SETTLED_MOVES = 10
#: the search makes no move when at least AGREEING_STARTS starts ended in one minimum (the
#: default's 5: spectral, 3 random, Bayes): starts from such different places that agree are
#: the sign of a landscape with one basin that counts. Measured: on the map of notebook 06
#: (λ' = 0.5, 8 seeds × 4 D) the starts agreed in 2 of 32 runs, both at the lowest minimum; at
#: λ' = 0.1 in none; in Fig. 4's simulations (T = 3) the 5 starts, the teacher's included,
#: agreed in 56 of 64 runs, where 10 fruitless moves would triple the cost
AGREEING_STARTS = 3
#: the random stream of the moves: key (seed, stage, HOP_STREAM, move), apart from the starts'
#: (seed, stage, k) and the spectral start's (seed, stage, 10⁶)
HOP_STREAM = 2 * 10**6
#: the random stream of the prior samples of :func:`bayes_preprocessing`
BAYES_STREAM = 3 * 10**6
#: prior samples χ ~ N(0, q0 I_T) of the posterior means of :func:`bayes_preprocessing`
BAYES_SAMPLES = 4096
_BAYES_BLOCK = 2048


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
    r"""Basin-hopping moves from the minimum ``best`` of ``objective`` (a function of x (D,)),
    at most ``n_hops``, until :data:`SETTLED_MOVES` in a row were not accepted.

    Move h minimises from x + :data:`HOP_STEP` max(‖x‖, 0.1√D) ξ/‖ξ‖, x the current minimum
    and ξ ~ N(0, I_D) from the seed sequence ``key + [h]``; the current minimum moves to the
    new one when its objective is finite and lower by more than
    :data:`~hdlora.simulation.starts.SAME_MINIMUM_RTOL` (relative). Returns the final minimum
    (``best`` itself when no move was accepted; otherwise the accepted fit, carrying ``best``'s
    ``starts``, ``best_start`` and ``message``), its ``n_evals`` and ``wall_time`` summed over
    ``best`` and every move, and the moves made: dicts of objective, overlap (``overlap(x)``),
    converged, accepted."""
    n_hops = check_basin_hops(n_hops)
    current, hops = best, []
    n_evals, wall_time = best.n_evals, best.wall_time
    D = best.x.shape[0]
    for h in range(n_hops):
        if len(hops) >= SETTLED_MOVES and not any(m["accepted"] for m in hops[-SETTLED_MOVES:]):
            break
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
        warn_not_converged(current, f"{desc} (after {len(hops)} moves)", gtol)
    return current, hops


def _row_differences(A: np.ndarray) -> np.ndarray:
    """(n, T, T) → (n, T(T − 1)): A_ab − A_aT for each row a and b < T (what a row-softmax
    keeps of its argument)."""
    return (A[..., :-1] - A[..., -1:]).reshape(A.shape[0], -1)


def _difference_covariance(T: int) -> np.ndarray:
    r"""C (T(T−1), T(T−1)): the covariance of the row differences of a symmetric T × T matrix
    whose entries a ≤ b are independent with variances s_ab = 1 + δ_ab (the law of the frozen
    fields, eq. 13, per unit variance): C = Bᵀ diag(s) B, B (L, T(T−1)) the row differences
    of each entry's indicator matrix."""
    s = multiplicity(T)
    B = _row_differences(np.eye(len(s))[positions(T)].transpose(2, 0, 1))
    return B.T @ (s[:, None] * B)


def bayes_preprocessing(logits: np.ndarray, z: np.ndarray, q0: float, seed_key: list[int]):
    r"""K_μ = I_T − q0 E[χ χᵀ | r_μ]⁻¹ (n, T, T), the preprocessing of the spectral start of
    :func:`bayes_spectral_start`, from the data alone.

    ``logits`` (n, T, T) are the teacher's pre-activations up to a constant per row (log σ(z*)
    for a softmax), ``z`` (n, T, T) the frozen student field. Their row differences
    r = Δ(z*) − κ Δ(z) = Δ(z*_ext − κ z) + Δ(χ*χ*ᵀ − q0 I) are a noisy view of χ* = Xw*/√D:
    the first term is Gaussian with covariance V C (:func:`_difference_covariance`). κ (the
    least-squares slope of Δ(z*) on Δ(z), → M/Q; 0 when z = 0, a frozen Ŵ = 0) and V (by
    moments: E‖r‖² − E_χ‖Δ(χχᵀ − q0 I)‖², over tr C) are estimated from the same data. The
    posterior mean E[χχᵀ | r] averages :data:`BAYES_SAMPLES` prior draws χ ~ N(0, q0 I_T) by
    their likelihood. Returns (K, κ, V)."""
    n, T, _ = z.shape
    r0, dz = _row_differences(logits), _row_differences(z)
    dz2 = float((dz * dz).sum())
    kappa = float((r0 * dz).sum() / dz2) if dz2 > 0 else 0.0  # z = 0: a model with Ŵ = 0
    r = r0 - kappa * dz
    rng = np.random.default_rng(np.random.SeedSequence(seed_key))
    chi = rng.standard_normal((BAYES_SAMPLES, T)) * math.sqrt(q0)
    outer = chi[:, :, None] * chi[:, None, :]
    f = _row_differences(outer - q0 * np.eye(T))
    C = _difference_covariance(T)
    V = max((np.mean((r**2).sum(1)) - np.mean((f**2).sum(1))) / np.trace(C), 1e-3)
    C_inv = np.linalg.pinv(V * C)  # rank-deficient for T ≥ 3: fewer free entries than differences
    f_norm = 0.5 * np.einsum("ki,ij,kj->k", f, C_inv, f)
    posterior = np.empty((n, T, T))
    for i in range(0, n, _BAYES_BLOCK):  # blocks of sequences bound the (block, samples) memory
        log_lik = r[i : i + _BAYES_BLOCK] @ C_inv @ f.T - f_norm
        weights = np.exp(log_lik - log_lik.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        posterior[i : i + _BAYES_BLOCK] = np.einsum("nk,kab->nab", weights, outer)
    K = np.eye(T) - q0 * np.linalg.inv(posterior + 1e-12 * np.eye(T))
    return K, kappa, V


def bayes_spectral_start(
    X: torch.Tensor, target: torch.Tensor, z: torch.Tensor, activation: str, key: list[int]
) -> torch.Tensor | None:
    r"""√D u, u the leading eigenvector of Σ_μ X_μᵀ K_μ X_μ / D with the preprocessing K_μ of
    :func:`bayes_preprocessing` (the spectral method of multi-index models, weighted by the
    posterior of χ*_μ given the sequence's labels).

    Uses the training set only: the sequences X (n, T, D), their labels ``target`` (n, T, T) of
    the ``activation`` σ, and the centred frozen field z (n, T, T) of the pre-trained model
    (w = 0); q0 = 1, the teacher's norm in the model. ``key`` seeds the prior samples and
    ARPACK's start vector. eigsh with two products with X per iteration, as a gradient. None
    (the stage runs without it, and its record says so) if the preprocessing is not finite or
    ARPACK fails."""
    import scipy.sparse.linalg as sla

    D = X.shape[-1]
    y = target.cpu().numpy()
    logits = np.log(np.maximum(y, 1e-300)) if activation == "softmax" else X.shape[1] * y
    try:
        K, _, _ = bayes_preprocessing(logits, z.cpu().numpy(), 1.0, key)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(K).all():
        return None
    K = torch.as_tensor(0.5 * (K + K.transpose(0, 2, 1))).to(X)

    def times(v):
        v = torch.as_tensor(np.asarray(v, dtype=np.float64).ravel()).to(X)
        chi = X @ v  # (n, T)
        K_chi = torch.einsum(
            "nab,nb->na", K, chi
        )  # (n, T): two passes over X, no (n, T, D) temporary
        return (X.reshape(-1, D).T @ K_chi.reshape(-1) / D).cpu().numpy()

    op = sla.LinearOperator((D, D), matvec=times, dtype=np.float64)
    v0 = seeded_normal([*key, 1], (D,), "cpu", torch.float64).numpy()
    try:
        _, vecs = sla.eigsh(op, k=1, which="LA", tol=1e-6, v0=v0, maxiter=50 * D)
    except sla.ArpackError:
        return None
    u = torch.as_tensor(vecs[:, 0]).to(X)
    return u / u.norm() * D**0.5


def starts_agree(fit: FitResult) -> bool:
    """At least :data:`AGREEING_STARTS` starts of ``fit`` ended with a finite objective, all in
    one minimum (objectives equal to :data:`~hdlora.simulation.starts.SAME_MINIMUM_RTOL`)."""
    finite = [s for s in fit.starts if math.isfinite(s["objective"])]
    return len(finite) >= AGREEING_STARTS and starts_summary(fit)["n_minima"] == 1


def search_info(fit: FitResult, hops: list[dict], bayes_start: bool, skipped: bool) -> dict:
    """The record's ``info`` entries of a search ending at ``fit`` (which carries its starts):
    ``ft_search_skipped`` (the starts agreed, :func:`starts_agree`: no moves were made),
    ``ft_n_hops`` (moves made), ``ft_hops_accepted``, ``ft_hops_objective_drop`` (the best
    start's objective minus the kept one, ≥ 0), ``ft_hops_last_accepted`` (the number of the
    last accepted move, 0 if none), ``ft_search_settled`` (none of the last
    :data:`SETTLED_MOVES` moves was accepted; True when there were no moves) and
    ``ft_bayes_start`` (a start from the data was run). Without starts (the frozen model,
    λ' = ∞) nothing was searched: no moves, a drop of 0."""
    last = max((h + 1 for h, move in enumerate(hops) if move["accepted"]), default=0)
    best = fit.starts[fit.best_start]["objective"] if fit.starts else fit.objective
    return {
        "ft_search_skipped": skipped,
        "ft_n_hops": len(hops),
        "ft_hops_accepted": sum(h["accepted"] for h in hops),
        "ft_hops_objective_drop": best - fit.objective if fit.starts else 0.0,
        "ft_hops_last_accepted": last,
        "ft_search_settled": last <= len(hops) - min(SETTLED_MOVES, len(hops)),
        "ft_bayes_start": bayes_start,
    }


def _frozen_model(w_star: torch.Tensor) -> FitResult:
    """ŵ = 0, the frozen model (λ' = ∞): no fit, no search (its record has the search's
    columns all the same, :func:`search_info`)."""
    fit = FitResult(
        x=torch.zeros_like(w_star),
        objective=math.nan,
        grad_max=0.0,
        n_iter=0,
        n_evals=0,
        converged=True,
        message="lam_ft = inf: w = 0",
        wall_time=0.0,
    )
    fit.search = search_info(fit, [], bayes_start=False, skipped=False)
    return fit


def finetune_stage(
    objective_at: Callable[[float], Callable[[torch.Tensor], torch.Tensor]],
    lam_ft: float,
    w_star: torch.Tensor,
    seed: int,
    *,
    desc: str,
    training_data: Callable[[], tuple],
    basin_hops: int = DEFAULT_BASIN_HOPS,
    bayes_start: bool = True,
    **options,
) -> FitResult:
    r"""The fine-tuning stage of both simulators at λ' = ``lam_ft``: ŵ = 0 (the frozen model)
    at λ' = ∞; else the starts of :func:`~hdlora.simulation.starts.fit_finetune` of the
    objective ``objective_at(lam_ft)`` (a function of w (D,)), plus the
    :func:`bayes_spectral_start` of ``training_data()`` = (X, target, z, activation) when
    ``bayes_start``, then at most ``basin_hops`` moves of :func:`basin_hop` from the lowest.

    ``options``: the keyword options of :func:`~hdlora.simulation.starts.fit_finetune` (``w0``,
    ``n_init``, ``teacher_start``, ``spectral_start``, ``gtol``, ``max_iter``, ``progress``).
    The fit's ``search`` holds :func:`search_info`; a search still descending at its last
    moves raises a :class:`~hdlora.diagnostics.ConvergenceWarning`. ŵ is signed so that m ≥ 0."""
    check_n_init(options.get("n_init"))
    basin_hops = check_basin_hops(basin_hops)
    if math.isinf(lam_ft):
        return _frozen_model(w_star)
    objective, key = objective_at(lam_ft), [seed, STAGE_ID["finetune"]]
    ran_bayes = False

    def data_start():
        nonlocal ran_bayes
        w = bayes_spectral_start(*training_data(), [*key, BAYES_STREAM])
        ran_bayes = w is not None
        return w

    fit = fit_finetune(
        objective,
        w_star,
        seed,
        desc=desc,
        data_start=data_start if bayes_start else None,
        **options,
    )
    solver = {k: options[k] for k in ("gtol", "max_iter", "progress") if k in options}
    skipped = starts_agree(fit)
    fit, hops = basin_hop(
        objective,
        fit,
        0 if skipped else basin_hops,
        [*key, HOP_STREAM],
        lambda w: finetune_overlap(w, w_star),
        desc=desc,
        **solver,
    )
    if float(fit.x @ w_star) < 0:
        fit.x = -fit.x
    fit.search = search_info(fit, hops, ran_bayes, skipped)
    if not fit.search["ft_search_settled"]:
        warn(
            ConvergenceWarning,
            f"{desc}, seed {seed}: move {fit.search['ft_hops_last_accepted']} of {basin_hops} "
            "still lowered the objective; more moves (basin_hops) may find a lower minimum",
        )
    return fit
