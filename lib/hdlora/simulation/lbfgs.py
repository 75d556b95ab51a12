"""A minimiser with honest convergence reporting: torch L-BFGS (strong Wolfe) in chunks.

App. D of the paper optimises both losses with PyTorch L-BFGS. This wrapper runs it in chunks of
iterations so that it can show a progress bar, and it decides convergence by the gradient at the
returned point (never by "the optimiser stopped"): ``converged`` is True only when
max_i |∂f/∂x_i| ≤ ``gtol``; otherwise a :class:`hdlora.diagnostics.ConvergenceWarning` is
raised (``warn=False`` leaves that to the caller). The progress bar fills as max |∇f| falls
towards ``gtol`` (log scale).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hdlora.diagnostics import ConvergenceWarning, warn
from hdlora.progress import ConvergenceBar

#: stop when the objective has not decreased by more than STALL_RTOL (relative) over this many
#: chunks: L-BFGS is then at the floating-point floor and more iterations cannot reach gtol
STALL_CHUNKS = 4
STALL_RTOL = 1e-13


@dataclass
class FitResult:
    """Outcome of one minimisation.

    ``x`` the minimiser (detached), ``objective`` f(x), ``grad_max`` max |∇f(x)|, ``n_iter``
    L-BFGS iterations, ``n_evals`` evaluations of f and ∇f, ``converged`` grad_max ≤ gtol,
    ``message`` why it stopped, ``wall_time`` seconds. A best-of-several-starts fit
    (:func:`hdlora.simulation.starts.best_of_starts`) also lists every start in ``starts``
    (dicts of flat scalars: kind, objective, overlap, converged, n_iter, grad_max) and the index
    ``best_start`` of the one kept; ``n_evals`` and ``wall_time`` are then summed over the starts.
    A fine-tuning fit carries in ``search`` the record's entries of its basin-hopping search
    (:func:`hdlora.simulation.search.search_info`).
    """

    x: torch.Tensor
    objective: float
    grad_max: float
    n_iter: int
    n_evals: int
    converged: bool
    message: str
    wall_time: float
    starts: list[dict] = field(default_factory=list)
    best_start: int = 0
    search: dict = field(default_factory=dict)


def _stop_reason(f, g, gtol, done, history: list[float], chunk: int) -> str | None:
    """Why the chunked iteration stops after a chunk (None: go on). ``history`` holds the
    objective after each chunk, this one's included."""
    if not (g < float("inf")) or f != f:
        return "non-finite objective or gradient"
    if g <= gtol:
        return "gradient tolerance reached"
    if done == 0:
        return "line search made no progress"
    # stalled: the objective has not moved (relative 1e-13) for STALL_CHUNKS chunks, i.e. the
    # gradient is at the floating-point floor above gtol (measured: a 1000-sequence linear
    # fine-tuning, max|∇f| stuck at 1.7e-6 for 20000 iterations)
    if len(history) > STALL_CHUNKS:
        old = history[-STALL_CHUNKS - 1]
        if old - min(history[-STALL_CHUNKS:]) <= STALL_RTOL * abs(old):
            return (
                f"stalled: objective unchanged (relative {STALL_RTOL:g}) over "
                f"{STALL_CHUNKS} chunks of {chunk} iterations"
            )
    return None


def minimize(
    fun: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    history_size: int = 20,
    chunk: int = 50,
    progress: bool | None = None,
    desc: str = "L-BFGS",
    warn_failure: bool = True,
) -> FitResult:
    r"""Minimise the scalar ``fun(x)`` from ``x0`` with L-BFGS and a strong-Wolfe line search.

    Parameters
    ----------
    fun : x ↦ f(x), a differentiable torch function (autograd gives ∇f).
    x0 : starting point (any shape); not modified.
    gtol : convergence when max_i |∂f/∂x_i| ≤ gtol.
    max_iter : L-BFGS iteration budget; reaching it without convergence is reported.
    warn_failure : raise a ConvergenceWarning when not converged (the record says so anyway).
    """
    if gtol <= 0:
        raise ValueError(f"gtol must be > 0, got gtol={gtol!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got max_iter={max_iter!r}")
    t0 = time.perf_counter()
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=chunk,
        max_eval=None,
        tolerance_grad=gtol,
        tolerance_change=1e-300,  # never stop on a small change: only the gradient decides
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )
    n_evals = 0
    last = {"f": float("nan"), "g": float("inf")}

    def closure():
        nonlocal n_evals
        opt.zero_grad()
        f = fun(x)
        f.backward()
        n_evals += 1
        last["f"] = float(f.detach())
        last["g"] = float(x.grad.detach().abs().max())
        return f

    n_iter = 0
    history: list[float] = []
    message = "max_iter reached"
    bar = ConvergenceBar(gtol, desc, progress)
    try:
        while n_iter < max_iter:
            opt.param_groups[0]["max_iter"] = min(chunk, max_iter - n_iter)
            before = opt.state[opt._params[0]].get("n_iter", 0)
            opt.step(closure)
            done = opt.state[opt._params[0]].get("n_iter", 0) - before
            n_iter += done
            bar.update(last["g"], done, f=f"{last['f']:.6g}")
            history.append(last["f"])
            stop = _stop_reason(last["f"], last["g"], gtol, done, history, chunk)
            if stop is not None:
                message = stop
                break
    finally:
        bar.close()
    # the closure's last call may be a line-search trial point: evaluate at the returned x
    f_final = closure()
    converged = last["g"] <= gtol
    result = FitResult(
        x=x.detach(),
        objective=float(f_final.detach()),
        grad_max=last["g"],
        n_iter=n_iter,
        n_evals=n_evals,
        converged=converged,
        message=message,
        wall_time=time.perf_counter() - t0,
    )
    if not converged and warn_failure:
        warn_not_converged(result, desc, gtol)
    return result


def warn_not_converged(fit: FitResult, desc: str, gtol: float) -> None:
    """The :class:`ConvergenceWarning` of a fit that stopped above ``gtol``."""
    warn(
        ConvergenceWarning,
        f"{desc} did not converge: {fit.message} (max|grad| = {fit.grad_max:.2e} > gtol = "
        f"{gtol:.1e} after {fit.n_iter} iterations)",
        stacklevel=4,
    )
