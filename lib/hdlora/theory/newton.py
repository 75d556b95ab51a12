r"""Batched damped Newton minimisation of many small independent problems at once.

Used by the proximal operators (:mod:`hdlora.theory.prox`, :mod:`hdlora.theory.prox_finetune`):
every Monte-Carlo sample is a k-dimensional problem min_x F_i(x) (k = T(T+1)/2 or T), all solved
in one vectorised loop. A Newton step uses a Cholesky solve where the Hessian is positive
definite and the absolute values of its eigenvalues elsewhere (a descent direction at a saddle
or a maximum); a backtracking Armijo line search accepts the step, or, when F no longer changes
within rounding, accepts it if it lowers max |∇F| (the last quadratically convergent steps).
Samples stop once max |∇F_i| ≤ tol.

Two backends run this algorithm: ``"numpy"`` (:func:`minimize_batch`, all samples at once; the
reference) and ``"numba"`` (:mod:`hdlora.theory.compiled`, one sample at a time, compiled; the
default, 3× faster, equal to 1e-10). A proximal hands :func:`minimize_starts` a ``solve``
function of either kind.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hdlora.diagnostics import ProximalWarning, warn
from hdlora.theory.rowops import absmax_last, sum_last

# objective(x, rows, need_hess) -> (F (m,), ∇F (m, k), ∇²F (m, k, k) or None) for the samples
# ``rows`` (indices into the batch) at the points x (m, k)
Objective = Callable[[np.ndarray, np.ndarray, bool], tuple]

#: the implementations of the damped Newton method; the first is the default
BACKENDS = ("numba", "numpy")
_backend: contextvars.ContextVar[str] = contextvars.ContextVar("backend", default=BACKENDS[0])


def check_backend(backend) -> str:
    """``backend`` if it is one of :data:`BACKENDS`; None: the current default (``"numba"``,
    or the one :func:`use_backend` set)."""
    if backend is None:
        return _backend.get()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got backend={backend!r}")
    return backend


@contextlib.contextmanager
def use_backend(backend: str):
    """Within the ``with`` block, every proximal called without ``backend`` uses ``backend``
    (benchmarks and tests run whole predictions on the numpy reference this way)."""
    token = _backend.set(check_backend(backend))
    try:
        yield
    finally:
        _backend.reset(token)


@dataclass
class BatchMinimum:
    """``x`` (n, k), ``f`` (n,), ``g`` (n, k), ``H`` (n, k, k) at the last iterate; ``n_iter``
    (the most iterations of a sample); the work, where counted (the compiled backend): ``n_steps``
    Newton steps and ``n_evals`` evaluations of F, ∇F, ∇²F, summed over the samples."""

    x: np.ndarray
    f: np.ndarray
    g: np.ndarray
    H: np.ndarray
    n_iter: int
    n_steps: int | None = None
    n_evals: int | None = None


def newton_step(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """−H⁻¹g per sample where H is positive definite (Cholesky), else with |eigenvalues|."""
    Ht, gt = torch.from_numpy(np.ascontiguousarray(H)), torch.from_numpy(g)[..., None]
    chol, info = torch.linalg.cholesky_ex(Ht)
    step = -torch.cholesky_solve(gt, chol)[..., 0].numpy()
    bad = info.numpy() != 0
    if bad.any():
        w, Qm = np.linalg.eigh(H[bad])
        floor = 1e-12 * (1 + np.abs(w).max(axis=-1, keepdims=True))
        w = np.maximum(np.abs(w), floor)  # flip negative curvature: a descent direction
        step[bad] = -np.einsum("nij,nj->ni", Qm, np.einsum("nji,nj->ni", Qm, g[bad]) / w)
    return step


def minimize_batch(
    x0: np.ndarray, objective: Objective, tol: float, max_iter: int = 100
) -> BatchMinimum:
    """Damped Newton from x0 (n, k) on every sample (see the module docstring)."""
    x = x0.copy()
    rows = np.arange(len(x))
    f, g, H = objective(x, rows, True)
    gmax = absmax_last(g)
    active = gmax > tol
    it = 0
    while active.any() and it < max_iter:
        it += 1
        idx = np.nonzero(active)[0]
        xi, fi, gi = x[idx], f[idx], g[idx]
        step = newton_step(H[idx], gi)
        slope = sum_last(gi * step)
        t = np.ones(len(idx))
        todo = np.ones(len(idx), dtype=bool)
        x_new = xi.copy()
        for _ in range(40):
            k = np.nonzero(todo)[0]
            x_try = xi[k] + t[k, None] * step[k]
            f_try, g_try, _ = objective(x_try, idx[k], False)
            armijo = f_try <= fi[k] + 1e-4 * t[k] * slope[k]
            flat = (f_try <= fi[k] + 1e-13 * (1 + np.abs(fi[k]))) & (
                absmax_last(g_try) < gmax[idx][k]
            )
            ok = armijo | flat
            x_new[k[ok]] = x_try[ok]
            todo[k[ok]] = False
            if not todo.any():
                break
            t[todo] /= 2
        x[idx] = x_new
        f_i, g_i, H_i = objective(x_new, idx, True)
        f[idx], g[idx], H[idx] = f_i, g_i, H_i
        gmax[idx] = absmax_last(g_i)
        active[idx] = (gmax[idx] > tol) & ~todo  # stop samples whose line search failed
    return BatchMinimum(x, f, g, H, it)


def best_of(results: list[BatchMinimum], residual_scale: float, tol: float):
    """Per sample, the converged start with the lowest F (else the lowest F).

    Returns (x, f, H, residual, n_disagree): ``residual`` = max|∇F| · ``residual_scale``;
    ``n_disagree`` counts samples where converged starts reached points more than 1e-6 apart.
    """
    xs = np.stack([r.x for r in results])
    fs = np.stack([r.f for r in results])
    res = np.stack([absmax_last(r.g) for r in results]) * residual_scale
    score = np.where(res <= tol, fs, np.inf)
    best = np.argmin(np.where(np.isinf(score).all(axis=0), fs, score), axis=0)
    n = xs.shape[1]
    cols = np.arange(n)
    xb = xs[best, cols]
    Hb = np.stack([r.H for r in results])[best, cols]
    differ = (absmax_last(xs - xb[None]) > 1e-6) & (res <= tol)
    return xb, fs[best, cols], Hb, res[best, cols], int(differ.any(axis=0).sum())


@dataclass
class StartsMinimum:
    """The best of several starts per sample (:func:`minimize_starts`): ``x`` (n, k), ``f``
    (n,), ``H`` (n, k, k), ``residual`` (n,), ``n_failed`` samples above tol, ``n_disagree``
    samples whose converged starts differ, ``n_iter`` (max over starts)."""

    x: np.ndarray
    f: np.ndarray
    H: np.ndarray
    residual: np.ndarray
    n_failed: int
    n_disagree: int
    n_iter: int


def minimize_starts(
    inits: list[np.ndarray],
    solve: Callable[[np.ndarray, float, int], BatchMinimum],
    residual_scale: float,
    tol: float,
    max_iter: int,
    label: str,
) -> StartsMinimum:
    """Minimise from each start of ``inits`` by ``solve(x0, tol, max_iter)`` (either backend)
    to max|∇F| · ``residual_scale`` ≤ ``tol``, keep the best per sample (:func:`best_of`), and
    warn (:class:`~hdlora.diagnostics.ProximalWarning`, naming the ``label``) when samples stay
    above ``tol``: the one way both proximals end."""
    runs = [solve(x0, tol / residual_scale, max_iter) for x0 in inits]
    x, f, H, res, n_disagree = best_of(runs, residual_scale, tol)
    n_failed = int((res > tol).sum())
    if n_failed:
        warn(
            ProximalWarning,
            f"{label} proximal: {n_failed} of {len(res)} samples above tol={tol:.0e} "
            f"(max residual {res.max():.2e})",
        )
    return StartsMinimum(
        x=x,
        f=f,
        H=H,
        residual=res,
        n_failed=n_failed,
        n_disagree=n_disagree,
        n_iter=max(r.n_iter for r in runs),
    )
