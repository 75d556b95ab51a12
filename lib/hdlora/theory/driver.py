r"""The one driver of both state evolutions: rounds, selection by free entropy, standard errors.

A state evolution is a fixed point x = G(x) of a map built from two channels (App. A): the
output channel averages per-sample conjugates x̂ over Monte-Carlo samples, each through a
proximal problem, and the input channel maps the averaged conjugates back to x. Each stage
supplies only its physics as a :class:`Stage` — pre-training (x = (Q, M, V), eqs. 46–54,
:mod:`hdlora.theory.pretrain`) and fine-tuning (x = (m, q, v), eqs. 67–72,
:mod:`hdlora.theory.finetune`). This module does the rest, once for both:

* :func:`run_stage`: a coarse fixed point on one RQMC block (1/8 of the cost per evaluation, to
  tolerance 1e-3), then the full sample from there. Between evaluations the proximals are warm
  started (cheap, but the map then depends on the path of the iterates); each round ends with
  one evaluation from every start, and when another start found a better proximal the fixed
  point is solved again from there. With ``Stage.every_start_rounds``, rounds after the first
  take every start at every evaluation (a map of x alone), within ``EVERY_START_ITER``
  evaluations, and fall back to warm starts when that map has no fixed point within reach.
* :func:`select`: between the fixed point found from the start and the stage's alternative
  (the uninformed m = 0 of the fine-tuning, the zero predictor of the pre-training above λ_c),
  the larger free entropy (eqs. 21, 22) describes the global minimiser.
* :func:`map_covariance`: Cov(x̂) by the delta method of :mod:`hdlora.theory.precision`, from the
  block means of the per-sample conjugates and the Jacobian of the map on two blocks.

The iteration itself is :func:`hdlora.theory.fixed_point.solve` (Anderson mixing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hdlora.theory.fixed_point import FixedPointResult, OutOfDomain, solve
from hdlora.theory.precision import (
    FixedPointCovariance,
    block_means,
    fixed_point_covariance,
    jacobian,
)

#: evaluations allowed to a fixed-point round that takes every proximal start at each evaluation
EVERY_START_ITER = 40
#: a round's final evaluation that moves no proximal by more than this ends the rounds
PROX_UNCHANGED = 1e-8


class Terminal(Exception):
    """Raised by a stage's map when the iteration reaches a closed-form fixed point (the zero
    predictor of the pre-training above λ_c): the stage returns that point instead."""


class ProxEvaluation:
    """What the driver reads of an output-channel evaluation held in ``self.prox`` (a proximal
    record with ``point`` and ``objective``): the base of both stages' channel records."""

    @property
    def point(self) -> np.ndarray:
        """The proximal maximisers (n, ...): the warm start of the next evaluation."""
        return self.prox.point

    @property
    def objective(self) -> np.ndarray:
        """F = −Ψ (eq. 42) or −ψ (eq. 63) at the maximisers (n,)."""
        return self.prox.objective


class Evaluation(Protocol):
    """One output-channel evaluation: ``per_sample`` (n, k) summands of the conjugates,
    ``point`` (n, ...) the proximal maximisers (the warm start of the next evaluation),
    ``objective`` (n,) F = −Ψ (or −ψ) at the maximisers."""

    per_sample: np.ndarray
    point: np.ndarray
    objective: np.ndarray


class Stage(Protocol):
    """The physics of one stage's state evolution, for the driver.

    ``samples`` has ``g`` (n, ·), ``blocks`` and ``subset(k)`` (the first k blocks);
    ``pinned`` the coordinates of x held at 0 for the alternative fixed point found by
    iteration (``()`` if there is none); ``rounds`` the most rounds of :func:`run_stage`."""

    name: str
    samples: Any
    pinned: tuple[int, ...]
    rounds: int
    every_start_rounds: bool

    def evaluate(self, x, samples, warm, every_start: bool) -> Evaluation:
        """The output channel at x on ``samples``; proximals warm started at ``warm`` (None:
        every start), and also from every start when ``every_start``."""

    def input_channel(self, conjugates: np.ndarray) -> np.ndarray:
        """x from the averaged conjugates (raises OutOfDomain outside its domain)."""

    def check(self, x_new: np.ndarray, coarse: bool) -> None:
        """Raise :class:`Terminal` where the iteration ends on a closed-form fixed point."""

    def project(self, x: np.ndarray) -> np.ndarray | None:
        """x if it is in the domain of the map, else None."""

    def free_entropy(self, x, conjugates, evaluation: Evaluation) -> float:
        """The free entropy (eq. 21 or 22) at x and its conjugates."""

    def desc(self, kind: str, coarse: bool) -> str:
        """The progress description of a solve."""


@dataclass
class Solution:
    """A fixed point of one stage: ``x``, its solve ``fixed_point``, the final ``evaluation``
    and its ``per_sample`` conjugates (pinned coordinates set to 0), map evaluations
    ``n_iter`` and ``coarse_iter``, the free entropy ``phi`` ± ``phi_se`` (the Monte-Carlo
    error of E F), ``coarse_only`` (solved on one block only), ``fell_back`` (the every-start
    rounds had no fixed point within reach)."""

    x: np.ndarray
    fixed_point: FixedPointResult
    evaluation: Any
    per_sample: np.ndarray
    n_iter: int
    coarse_iter: int
    phi: float
    phi_se: float
    coarse_only: bool = False
    fell_back: bool = False

    @property
    def converged(self) -> bool:
        return self.fixed_point.converged


def stage_map(stage: Stage, samples, cache: dict, *, every_start=False, pin=(), check=None):
    """x ↦ G(x) on ``samples``, the proximals warm started from ``cache["warm"]`` (updated at
    each evaluation); the coordinates ``pin`` held at 0; ``check`` "coarse"/"full" makes the
    stage's :meth:`Stage.check` end the iteration on a closed-form fixed point."""

    def G(x):
        y = _pin(x, pin)
        ev = stage.evaluate(y, samples, cache["warm"], every_start)
        cache["warm"] = ev.point
        out = stage.input_channel(ev.per_sample.mean(axis=0))
        if check is not None:
            stage.check(out, check == "coarse")
        return _pin(out, pin) if pin else out

    return G


def _pin(x, pin):
    if not pin:
        return x
    y = np.array(x, dtype=float)
    y[list(pin)] = 0.0
    return y


def _solution(stage, x, fp, ev, pin, **counts) -> Solution:
    per = ev.per_sample
    if pin:  # the pinned conjugates vanish in expectation (their sample means are noise)
        per = per.copy()
        per[:, list(pin)] = 0.0
    phi = stage.free_entropy(x, per.mean(axis=0), ev)
    phi_se = float(np.std(ev.objective) / math.sqrt(len(ev.objective)))
    return Solution(
        x=x, fixed_point=fp, evaluation=ev, per_sample=per, phi=phi, phi_se=phi_se, **counts
    )


def _coarse(stage, x, pin, kind, solver: dict):
    """The coarse fixed point on one block from x (None when the map ended on a closed-form
    point or left its domain: the full solve then starts from x)."""
    sub = stage.samples.subset(1)
    G = stage_map(stage, sub, {"warm": None}, pin=pin, check="coarse")
    try:
        return sub, solve(
            G,
            x,
            **{**solver, "tol": max(solver["tol"], 1e-3)},
            project=stage.project,
            desc=stage.desc(kind, True),
            warn_failure=False,
        )
    except (Terminal, OutOfDomain):
        return sub, None


def run_stage(
    stage: Stage,
    x,
    *,
    pin=False,
    coarse_only=False,
    tol=1e-6,
    max_iter=200,
    damping=0.5,
    progress=None,
) -> Solution:
    """The fixed point from x: coarse block, full sample, rounds (module docstring); with
    ``pin`` the coordinates ``stage.pinned`` held at 0; with ``coarse_only`` the coarse fixed
    point, evaluated on its block from every start. Raises :class:`Terminal` when the full map
    reaches the stage's closed-form fixed point."""
    pin_idx = stage.pinned if pin else ()
    kind = "uninformed" if pin else "informed"
    solver = dict(tol=tol, max_iter=max_iter, damping=damping, progress=progress)
    n_iter = coarse_iter = 0
    if stage.samples.blocks > 1:
        sub, fpc = _coarse(stage, x, pin_idx, kind, solver)
        coarse_iter = fpc.n_iter if fpc is not None else 0
        if coarse_only:
            ev = stage.evaluate(fpc.x, sub, None, True)
            return _solution(
                stage, fpc.x, fpc, ev, pin_idx, n_iter=0, coarse_iter=coarse_iter, coarse_only=True
            )
        if fpc is not None and fpc.converged and (pin or fpc.x[0] > 0):
            x = fpc.x
    cache: dict = {"warm": None}
    every, fell_back, n_rounds = False, False, 0
    while n_rounds < stage.rounds:
        G = stage_map(stage, stage.samples, cache, every_start=every, pin=pin_idx, check="full")
        warm_before = cache["warm"]
        budget = max_iter - n_iter
        fp = solve(
            G,
            x,
            **{**solver, "max_iter": min(budget, EVERY_START_ITER) if every else budget},
            project=stage.project,
            desc=stage.desc(kind, False),
            warn_failure=not every,
        )
        n_iter += fp.n_iter
        if every and not fp.converged and n_iter < max_iter:
            # the every-start map has no fixed point within reach (samples switching between
            # the proximal's minima): back to warm starts, from the same point and proximals
            every, fell_back = False, True
            cache["warm"] = warm_before
            continue
        n_rounds += 1
        x = fp.x
        ev = stage.evaluate(x, stage.samples, cache["warm"], True)
        changed = float(np.abs(ev.point - cache["warm"]).max())
        cache["warm"] = ev.point
        if not fp.converged or changed < PROX_UNCHANGED or n_iter >= max_iter:
            break
        every = stage.every_start_rounds and not fell_back
    return _solution(
        stage, x, fp, ev, pin_idx, n_iter=n_iter, coarse_iter=coarse_iter, fell_back=fell_back
    )


def select(
    found: dict[str, Solution], start: str, alternative: str, is_distinct
) -> tuple[str, int]:
    """The fixed point that describes the global minimiser, and how many distinct ones exist.

    ``found[start]`` is the fixed point iterated from the start; ``found[alternative]`` (if
    present) the stage's alternative. The first counts when it converged away from the
    alternative (``is_distinct(x)``). Of two, the larger free entropy wins; a failed or
    collapsed iteration from the start leaves the alternative."""
    first = found[start]
    distinct = [
        k for k in found if k == alternative or (found[k].converged and is_distinct(found[k].x))
    ]
    if alternative not in found:
        return start, len(distinct)
    if len(distinct) == 2 and first.converged:
        return max(distinct, key=lambda k: found[k].phi), 2
    if not (first.converged and start in distinct):
        return alternative, len(distinct)
    return start, len(distinct)


def selection_info(found: dict[str, Solution], chosen: str, n_distinct: int) -> dict:
    """The record's ``info`` on the selection: the chosen fixed point, the free entropies."""
    best = found[chosen]
    return {
        "fixed_point": chosen,
        "n_fixed_points": n_distinct,
        "free_entropy": best.phi,
        "predicted_objective": -best.phi,
        **{f"free_entropy_{k}": f.phi for k, f in found.items()},
        **{f"free_entropy_{k}_se": f.phi_se for k, f in found.items()},
    }


def map_covariance(stage: Stage, solution: Solution) -> FixedPointCovariance:
    r"""Cov(x̂) by the delta method: Cov_k(G_k) from the block means of the per-sample
    conjugates, J = ∂G/∂x by forward differences on two blocks (common random numbers, warm
    started at the solution's proximals). Raises OutOfDomain where a block's conjugates leave
    the domain of the input channel."""
    K = stage.samples.blocks
    G_blocks = np.array(
        [stage.input_channel(c) for c in block_means(solution.per_sample, K)], dtype=float
    )
    sub = stage.samples.subset(2)
    k = len(sub.g)
    G = stage_map(stage, sub, {"warm": solution.evaluation.point[:k].copy()})
    return fixed_point_covariance(jacobian(G, solution.x), G_blocks)
