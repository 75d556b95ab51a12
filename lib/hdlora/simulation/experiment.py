r"""Finite-D simulation of the two-stage model: the ground truth of the project (App. D).

An :class:`Experiment` draws, from one seed, the teacher and the four sets of eq. (6): the N
pre-training samples, the N' fine-tuning samples (fresh for e = 0, the first N' pre-training
sequences with their noise for e = 1), and 10D fresh test samples of each task (App. D). Then

* :meth:`Experiment.pretrain` minimises eq. (2) + λ‖W‖²_F over W ∈ R^{D×P} with L-BFGS,
* :meth:`Experiment.finetune` minimises eq. (3) + λ'‖w‖² over w ∈ R^D with Ŵ frozen,
* :meth:`Experiment.observables` measures ℰ, ℒ, ℰ', ℒ', ℰ'' (eq. 84), o_w and the order
  parameters Q0, Q, M (eq. 8), q0, q, m (eq. 9).

The data do not depend on λ, λ', so one experiment serves a sweep over them; warm starts
(``W0``, ``w0``) let a sweep reuse the previous solution. :func:`simulate` runs the whole
pipeline, with the recalibration Ŵ → √β Ŵ of eq. (26) (App. E) between the stages and,
optionally, the active selection of the fine-tuning set (Algorithm 1).

Several starts per stage (:func:`best_of_starts`). The fine-tuning objective (3) is not convex
in w: at T = 2, α' = 2, D = 60–200 a single random start often stops at o_w ≈ 0.05–0.4 where the
lowest minimum has o_w ≈ 0.7–0.9. Each stage therefore runs several starts and keeps the lowest
objective: by default :data:`DEFAULT_N_INIT` starts (fine-tuning 4: the spectral start of
:func:`spectral_init`, the lowest-curvature direction of the objective at w = 0, then 3 random
ones; one fine-tuning start costs a few percent of a pre-training; pre-training 2 random starts:
it is the expensive stage, and its landscape (P ≥ D) was not seen to trap L-BFGS). Random
starts do not suffice everywhere: at T = 2, α' = 2, λ' = 0.1 and D = 200, none of 32 random
starts reached the minimum of the teacher start (tests/test_simulate_finetune.py,
bench/bench_simulate.py). ``teacher_start=True`` adds a start at the teacher
(w = w*; W = c (P/P0)^{1/4} [W*, 0] so that Ŝ = c² S*, c from a 1-D scan of the objective).
It uses the ground truth, so it is a validation device (does the theory describe the lowest
minimum one can find?), not an estimator; it is kept only when its objective is the lowest.
Every record lists each start (objective, overlap, kind) and warns
(:class:`~hdlora.diagnostics.StartsDisagreeWarning`) when a start's overlap differs from the
kept one's by more than :data:`OVERLAP_DISAGREE`.

λ = ∞ gives Ŵ = 0 and λ' = ∞ gives ŵ = 0 exactly (the baselines of App. A.7).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from hdlora.diagnostics import StartsDisagreeWarning, warn
from hdlora.model.activations import activation
from hdlora.model.data import (
    Centering,
    SequenceSet,
    check_centering,
    draw_noise,
    draw_sequences,
    draw_teacher,
    finetune_set,
    generators,
    pretrain_set,
)
from hdlora.model.losses import (
    finetune_objective,
    finetune_preactivation,
    frozen_preactivation,
    pretrain_objective,
    pretrain_preactivation,
    sample_errors,
)
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.lbfgs import FitResult, minimize, warn_not_converged

_STAGE_ID = {"pretrain": 0, "finetune": 1}
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


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_n_init(n_init, name: str = "n_init") -> int | None:
    """None, or an integer >= 1 (bools refused)."""
    if n_init is None:
        return None
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
        raise ValueError(f"{name} must be an integer >= 1 or None, got {name}={n_init!r}")
    return int(n_init)


def check_beta(beta) -> float | None:
    """None (β* = M/Q of the run), or a finite number > 0."""
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, int | float | np.floating):
        raise ValueError(f"beta must be a finite number > 0 or None, got beta={beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0 or None, got beta={beta!r}")
    return float(beta)


def check_rho(rho) -> float | None:
    """None (uniform selection), or a labelling ratio ρ = N'/N̄' ∈ (0, 1]."""
    if rho is None:
        return None
    if isinstance(rho, bool) or not isinstance(rho, int | float | np.floating):
        raise ValueError(f"rho must be a number in (0, 1] or None, got rho={rho!r}")
    if not (0 < rho <= 1):
        raise ValueError(f"rho must be a number in (0, 1] or None, got rho={rho!r}")
    return float(rho)


def seeded_normal(key: list[int], shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """i.i.d. N(0, 1) of ``shape`` from the seed sequence ``key`` (independent of call order)."""
    ss = np.random.SeedSequence(key)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63)))
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
) -> list[tuple[str, torch.Tensor]]:
    """The (kind, x0) starts of a stage: the warm start ``x0`` if given, the spectral start if
    ``spectral`` is given (and succeeds), random ones ``random(k)``, k = 0, 1, …, up to
    :func:`n_starts` in all, then the teacher start if ``teacher`` is given."""
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


def active_order(z: torch.Tensor, n_keep: int, activation_name: str) -> torch.Tensor:
    """Algorithm 1, steps 1–3: the indices of the ``n_keep`` candidates whose frozen attention
    σ(z_μ) is closest to σ(0) in Frobenius norm, in increasing index order (so that ρ = 1 keeps
    the set as drawn)."""
    sigma = activation(activation_name)
    score = (sigma(z) - sigma(torch.zeros_like(z[:1]))).square().sum(dim=(-1, -2))
    keep = torch.argsort(score, stable=True)[:n_keep]
    return torch.sort(keep).values


class Experiment:
    r"""The data of one finite-D realisation, and the two training stages on them.

    Parameters
    ----------
    params : the model; its λ, λ' are defaults that the stage methods can override.
    D : token dimension (P0 = κ0 D, P = κ D, N = α D², N' = α' D, rounded).
    seed : one seed for the teacher, every set and every random initialisation.
    n_test : number of fresh test sequences of each task (default 10 D, App. D).
    centering : "population" (eq. 34, what the theory describes) or "empirical" (eq. 1 read
        literally: the mean of A over the set; at test time the student keeps the centring of
        its training set, and the teacher's targets are centred over their own set).
    device, dtype : where and in what precision to compute (default CUDA if present, float64).
    """

    def __init__(
        self,
        params: Params,
        D: int,
        seed: int = 0,
        *,
        n_test: int | None = None,
        centering: Centering = "population",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        check_centering(centering)
        self.params = params
        self.sizes = params.sizes(D)
        self.D = self.sizes.D
        self.seed = int(seed)
        self.centering = centering
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        n_test = 10 * self.D if n_test is None else n_test
        if isinstance(n_test, bool) or int(n_test) != n_test or n_test < 1:
            raise ValueError(f"n_test must be an integer >= 1, got n_test={n_test!r}")
        self.n_test = int(n_test)
        #: how the fine-tuning set was chosen (:meth:`select_active` changes these)
        self.rho: float | None = None
        self.selection = "uniform"
        self.selection_info: dict = {}

        g = generators(self.seed)
        teacher = draw_teacher(self.D, params, g["teacher"])
        train = pretrain_set(teacher, params, self.sizes.N, g["pretrain"], centering)
        ft = finetune_set(
            teacher,
            params,
            self.sizes.N_ft,
            g["finetune"],
            centering,
            reuse_from=train if params.reuse else None,
        )
        test = pretrain_set(teacher, params, self.n_test, g["test_pretrain"], centering)
        test_ft = finetune_set(teacher, params, self.n_test, g["test_finetune"], centering)
        conv = dict(device=self.device, dtype=self.dtype)
        self.teacher = teacher.to(**conv)
        self.train: SequenceSet = train.to(**conv)
        self.ft: SequenceSet = ft.to(**conv)
        self.test: SequenceSet = test.to(**conv)
        self.test_ft: SequenceSet = test_ft.to(**conv)

    # ------------------------------------------------------------------ initialisations
    def _random_start(self, stage: str, k: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The k-th random initialisation of a stage, i.i.d. N(0, 1), independent of call order."""
        return seeded_normal([self.seed, _STAGE_ID[stage], k], shape, self.device, self.dtype)

    def teacher_pretrain_start(self, lam: float | None = None) -> torch.Tensor:
        r"""The teacher start of the pre-training: W = c (P/P0)^{1/4} [W*, 0] (W*'s columns
        padded with zeros, or truncated, to P), so that Ŝ = c² S* when P ≥ P0; c is the best of
        a scan c ∈ {0.2, 0.4, …, 1.6} of the objective (2) + λ‖W‖²_F (one forward pass each)."""
        params = self.params if lam is None else self.params.replace(lam=lam)
        W_star = self.teacher.W_star
        P, P0 = self.sizes.P, W_star.shape[1]
        base = torch.zeros(self.D, P, device=self.device, dtype=self.dtype)
        k = min(P, P0)
        base[:, :k] = W_star[:, :k] * (P / P0) ** 0.25
        best_c, best_f = 1.0, math.inf
        with torch.no_grad():
            for c in 0.2 * np.arange(1, 9):
                f = float(pretrain_objective(c * base, self.train, params, self.centering))
                if f < best_f:
                    best_c, best_f = float(c), f
        return best_c * base

    def _starts(self, stage, shape, x0, n_init, teacher_start, teacher, spectral=None):
        return assemble_starts(
            stage,
            x0,
            n_init,
            lambda k: self._random_start(stage, k, shape),
            teacher if teacher_start else None,
            spectral,
            self.device,
            self.dtype,
        )

    # ------------------------------------------------------------------ the two stages
    def pretrain(
        self,
        lam: float | None = None,
        *,
        W0: torch.Tensor | None = None,
        n_init: int | None = None,
        teacher_start: bool = False,
        gtol: float = 1e-6,
        max_iter: int = 20000,
        progress: bool | None = None,
    ) -> FitResult:
        """Minimise eq. (2) + λ‖W‖²_F; returns the fit (``fit.x`` is Ŵ, shape (D, P)).

        Starts: ``W0`` (a warm start) if given, random ones up to ``n_init`` in all (None:
        :data:`DEFAULT_N_INIT` ["pretrain"], or the warm start alone), and the teacher start
        :meth:`teacher_pretrain_start` if ``teacher_start``; the lowest objective is kept and
        ``fit.starts`` lists every start (overlap M/√(Q Q0))."""
        params = self.params if lam is None else self.params.replace(lam=lam)
        shape = (self.D, self.sizes.P)
        check_n_init(n_init)
        if math.isinf(params.lam):
            W = torch.zeros(shape, device=self.device, dtype=self.dtype)
            return FitResult(W, float("nan"), 0.0, 0, 0, True, "lam = inf: W = 0", 0.0)
        starts = self._starts(
            "pretrain", shape, W0, n_init, teacher_start, lambda: self.teacher_pretrain_start(lam)
        )
        train = self.train

        def objective(W):
            return pretrain_objective(W, train, params, self.centering)

        def overlap(W):
            op = self.order_parameters(W, None)
            return op["M"] / math.sqrt(op["Q"] * op["Q0"]) if op["Q"] > 0 else 0.0

        return best_of_starts(
            objective,
            starts,
            overlap,
            desc=f"pretrain D={self.D}",
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
        )

    def finetune(
        self,
        W_hat: torch.Tensor,
        lam_ft: float | None = None,
        *,
        w0: torch.Tensor | None = None,
        n_init: int | None = None,
        teacher_start: bool = False,
        spectral_start: bool = True,
        gtol: float = 1e-6,
        max_iter: int = 20000,
        progress: bool | None = None,
    ) -> FitResult:
        """Minimise eq. (3) + λ'‖w‖² with Ŵ frozen; ``fit.x`` is ŵ (D,), signed so that m ≥ 0.

        Starts as in :meth:`pretrain` (None: :data:`DEFAULT_N_INIT` ["finetune"]), the first
        non-warm one being the spectral start (:func:`spectral_init`) unless
        ``spectral_start=False``; the teacher start is w = w*; ``fit.starts`` records the
        overlap o_w of each."""
        params = self.params if lam_ft is None else self.params.replace(lam_ft=lam_ft)
        check_n_init(n_init)
        if math.isinf(params.lam_ft):
            w = torch.zeros(self.D, device=self.device, dtype=self.dtype)
            return FitResult(w, float("nan"), 0.0, 0, 0, True, "lam_ft = inf: w = 0", 0.0)
        ft = self.ft
        A_frozen = frozen_preactivation(ft.X, W_hat)

        def objective(w):
            return finetune_objective(w, A_frozen, W_hat, ft, params, self.centering)

        def spectral():
            key = [self.seed, _STAGE_ID["finetune"], 10**6]
            return spectral_init(objective, self.D, key, self.device, self.dtype)

        starts = self._starts(
            "finetune",
            (self.D,),
            w0,
            n_init,
            teacher_start,
            lambda: self.teacher.w_star.clone(),
            spectral if spectral_start else None,
        )

        fit = best_of_starts(
            objective,
            starts,
            lambda w: finetune_overlap(w, self.teacher.w_star),
            desc=f"finetune D={self.D}",
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
        )
        if float(fit.x @ self.teacher.w_star) < 0:  # w -> -w is an exact symmetry of eq. (3)
            fit.x = -fit.x
        return fit

    # ------------------------------------------------------------------ active fine-tuning
    def select_active(self, W_hat: torch.Tensor, rho: float) -> SequenceSet:
        r"""Algorithm 1: replace the fine-tuning set by the N' best of N̄' = round(N'/ρ) fresh
        candidate sequences (e = 0 only).

        The candidates (X, ξ) come from their own random stream (the uniform set is unchanged);
        each is scored by ‖σ(z_μ) − σ(0)‖²_F with z_μ the frozen pre-activation of ``W_hat``
        (the map that will be fine-tuned, i.e. after any recalibration), the N' lowest are kept
        and only they are labelled. ``info`` records the measured effective noise of the pool
        and of the selected set (:func:`delta_eff_hat`). Returns the new set (also ``self.ft``).
        """
        rho = check_rho(rho)
        if rho is None:
            raise ValueError("rho must be a number in (0, 1], got rho=None")
        if self.params.reuse:
            raise ValueError(
                "active fine-tuning (rho) needs fresh fine-tuning sequences: reuse must be False"
            )
        n = self.sizes.N_ft
        n_cand = max(round(n / rho), n)
        ss = np.random.SeedSequence([self.seed, 3])
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63)))
        X = draw_sequences(n_cand, self.D, self.params.T, gen)
        xi = draw_noise(n_cand, self.params.T, self.params.Delta, gen)
        conv = dict(device=self.device, dtype=self.dtype)
        pool = finetune_set(
            self.teacher.to(device="cpu", dtype=torch.float64),
            self.params,
            n_cand,
            None,
            self.centering,
            reuse_from=SimpleNamespace(n=n_cand, X=X, xi=xi),
        ).to(**conv)
        with torch.no_grad():
            z_pool = pretrain_preactivation(pool.X, W_hat, self.centering)
            keep = active_order(z_pool, n, self.params.activation)
            pool_d, pool_se = delta_eff_hat(z_pool, pool.z_star_ext)
        keep = keep.cpu()
        chosen = finetune_set(
            self.teacher.to(device="cpu", dtype=torch.float64),
            self.params,
            n,
            None,
            self.centering,
            reuse_from=SimpleNamespace(n=n, X=X[keep], xi=xi[keep]),
        )
        self.ft = chosen.to(**conv)
        self.rho, self.selection = rho, "active"
        self.selection_info = {
            "n_candidates": n_cand,
            "pool_Delta_eff_hat": pool_d,
            "pool_Delta_eff_hat_se": pool_se,
        }
        return self.ft

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def order_parameters(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        r"""Q0, Q, M of eq. (8) and q0, q, m of eq. (9) at this D (q, m only with ŵ).

        D⁻² Tr Ŝ² = ‖ŴᵀŴ‖²_F/(P D²), D⁻² Tr ŜS* = ‖ŴᵀW*‖²_F/(√(P P0) D²),
        Q0 = ‖W*ᵀW*‖²_F/(P0 D²).
        """
        D, P = W_hat.shape
        W_star, w_star = self.teacher.W_star, self.teacher.w_star
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
    def errors(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        """ℰ, ℒ/N on the pre-training sets; with ŵ also ℰ', ℒ'/N' and ℰ'' (eq. 84)."""
        p, c = self.params, self.centering
        # the model's own centring: population, or the empirical mean over its training set
        ref_pre = ref_ft = None
        if c == "empirical":
            ref_pre = frozen_preactivation(self.train.X, W_hat).mean(dim=0)

        def pre(data):
            return sample_errors(pretrain_preactivation(data.X, W_hat, c, ref_pre), data, p)

        test = pre(self.test)
        out = {
            "test_error": float(test.mean()),
            "train_error": float(pre(self.train).mean()),
            "test_error_se": float(test.std() / self.n_test**0.5),
        }
        if w_hat is None:
            return out
        A_ft_train = frozen_preactivation(self.ft.X, W_hat)
        if c == "empirical":
            chi = self.ft.X @ w_hat / self.D**0.5
            ref_ft = (A_ft_train + chi[:, :, None] * chi[:, None, :]).mean(dim=0)

        def fine(data, A=None):
            A = frozen_preactivation(data.X, W_hat) if A is None else A
            z = finetune_preactivation(A, data.X, W_hat, w_hat, c, ref_ft)
            return sample_errors(z, data, p)

        test_ft = fine(self.test_ft)
        forget = fine(self.test)  # fine-tuned model on fresh pre-training samples, eq. (84)
        return out | {
            "ft_test_error": float(test_ft.mean()),
            "ft_train_error": float(fine(self.ft, A_ft_train).mean()),
            "forgetting_error": float(forget.mean()),
            "ft_test_error_se": float(test_ft.std() / self.n_test**0.5),
            "forgetting_error_se": float(forget.std() / self.n_test**0.5),
        }

    def observables(
        self,
        W_hat: torch.Tensor,
        w_hat: torch.Tensor,
        fits: dict[str, FitResult] | None = None,
        wall_time: float = math.nan,
    ) -> Observables:
        """The :class:`Observables` record (source = "simulation") of trained weights.

        ``w_hat=None`` measures the pre-training only (fine-tuning fields NaN). ``Delta_eff`` is
        Δ/2 + Q0 − 2M + Q of ``W_hat`` (eq. 25); ``rho`` and ``selection`` say how the
        fine-tuning set was chosen; ``info`` holds each fit's statistics, its starts
        (:func:`starts_info`, prefixes ``pre_`` and ``ft_``) and, with ŵ, the measured effective
        noise ``train_Delta_eff_hat`` of the fine-tuning set (:func:`delta_eff_hat`)."""
        pre_only = w_hat is None
        op = self.order_parameters(W_hat, w_hat)
        err = self.errors(W_hat, w_hat)
        info = {"n_test": self.n_test, "centering": self.centering, "device": str(self.device)}
        converged, n_iter, messages, grads = True, 0, [], []
        for stage, fit in (fits or {}).items():
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
            info |= starts_info(fit, STAGE_PREFIX[stage])
        if not pre_only:
            with torch.no_grad():
                z_ft = pretrain_preactivation(self.ft.X, W_hat, self.centering)
                d, se = delta_eff_hat(z_ft, self.ft.z_star_ext)
            info |= {"train_Delta_eff_hat": d, "train_Delta_eff_hat_se": se}
            info |= self.selection_info
        q, q0 = op.get("q", math.nan), op["q0"]
        overlap = abs(op["m"]) / math.sqrt(q * q0) if q > 0 else (math.nan if pre_only else 0.0)
        delta_eff = self.params.Delta / 2 + op["Q0"] - 2 * op["M"] + op["Q"]
        return Observables(
            params=self.params,
            source="simulation",
            **err,
            overlap=overlap,
            **op,
            Delta_eff=delta_eff,
            rho=math.nan if self.rho is None else self.rho,
            selection=self.selection,
            D=self.D,
            seed=self.seed,
            converged=converged,
            n_iter=n_iter,
            residual=max(grads) if grads else math.nan,
            message="; ".join(messages),
            wall_time=wall_time,
            info=info,
        )


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


def simulate(
    params: Params,
    D: int,
    seed: int = 0,
    *,
    n_init: int | tuple[int, int] | None = None,
    teacher_start: bool = False,
    spectral_start: bool = True,
    beta: float | None = 1.0,
    rho: float | None = None,
    W0: torch.Tensor | None = None,
    w0: torch.Tensor | None = None,
    n_test: int | None = None,
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
    n_init : starts per stage: None (default) gives :data:`DEFAULT_N_INIT` (pre-training 2,
        fine-tuning 4 random starts; a warm start ``W0``/``w0`` alone when given); an integer
        is used for both stages, a pair as (pre-training, fine-tuning). The lowest objective is
        kept; ``info`` lists each start (``pre_start{k}_objective``, ``ft_start{k}_overlap``,
        …) and whether they disagree (:func:`starts_summary`).
    teacher_start : add a start at the teacher in both stages (W ∝ W* scaled so that Ŝ ∝ S*,
        w = w*): a validation device that uses the ground truth, see the module docstring.
    spectral_start : the first fine-tuning start is the spectral one (:func:`spectral_init`)
        instead of a random one (default True).
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
    exp = Experiment(
        params, D, seed, n_test=n_test, centering=centering, device=device, dtype=dtype
    )
    fit_pre = exp.pretrain(
        W0=W0,
        n_init=n_pre,
        teacher_start=teacher_start,
        gtol=gtol,
        max_iter=max_iter,
        progress=progress,
    )
    fits = {"pretrain": fit_pre}
    op = exp.order_parameters(fit_pre.x, None)
    beta_star = op["M"] / op["Q"] if op["Q"] > 0 else math.nan
    beta, W_hat, note = _recalibrate(fit_pre.x, beta, beta_star)
    if rho is not None and finetune:
        exp.select_active(W_hat, rho)
    w_hat = None
    if finetune:
        fit_ft = exp.finetune(
            W_hat,
            w0=w0,
            n_init=n_ft,
            teacher_start=teacher_start,
            spectral_start=spectral_start,
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
        )
        fits["finetune"] = fit_ft
        w_hat = fit_ft.x
    obs = exp.observables(W_hat, w_hat, fits, wall_time=time.perf_counter() - t0)
    info = obs.info | {"Q_unscaled": op["Q"], "M_unscaled": op["M"]}
    message = obs.message if note is None else f"{obs.message}; {note}"
    return obs.replace(beta=beta, beta_star=beta_star, info=info, message=message)


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
    n_test: int | None = None,
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
    exp = Experiment(
        params, D, seed, n_test=n_test, centering=centering, device=device, dtype=dtype
    )
    fit_pre = exp.pretrain(
        n_init=n_pre, teacher_start=teacher_start, gtol=gtol, max_iter=max_iter, progress=progress
    )
    op = exp.order_parameters(fit_pre.x, None)
    beta_star = op["M"] / op["Q"] if op["Q"] > 0 else math.nan
    t_pre = time.perf_counter() - t0
    records = []
    for beta_arg in betas:
        beta, W_hat, note = _recalibrate(fit_pre.x, beta_arg, beta_star)
        for lam_ft in lam_fts:
            t1 = time.perf_counter()
            fit_ft = exp.finetune(
                W_hat,
                lam_ft,
                n_init=n_ft,
                teacher_start=teacher_start,
                spectral_start=spectral_start,
                gtol=gtol,
                max_iter=max_iter,
                progress=progress,
            )
            fits = {"pretrain": fit_pre, "finetune": fit_ft}
            obs = exp.observables(W_hat, fit_ft.x, fits, t_pre + time.perf_counter() - t1)
            info = obs.info | {"Q_unscaled": op["Q"], "M_unscaled": op["M"]}
            message = obs.message if note is None else f"{obs.message}; {note}"
            records.append(
                obs.replace(
                    params=params.replace(lam_ft=lam_ft),
                    beta=beta,
                    beta_star=beta_star,
                    info=info,
                    message=message,
                )
            )
    return records
