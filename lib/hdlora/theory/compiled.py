r"""The damped Newton of :mod:`hdlora.theory.newton`, compiled with numba, one sample at a time.

The numpy path (:func:`hdlora.theory.newton.minimize_batch`) solves n ≈ 3·10⁴ problems of
k = T(T+1)/2 or T variables together, so every operation is a pass over arrays of shape
(n, T, T): with T = 3 the passes, not the arithmetic, set its time. Here each sample runs the
same algorithm to its end in registers and small scratch arrays:

* the same objectives: the pre-training F(h) = ‖σ(H) − Y‖²_F + Σ_k (h_k − z̃_k)²/(2 p_k), with
  p = V s (eq. 42), and the fine-tuning F(χ) = f(Z_base + χχᵀ) + ‖χ − χ̃‖²/(2v) (eq. 63), for the
  row-wise softmax (:func:`_softmax_row`, the formulas of
  :func:`hdlora.theory.prox.softmax_row_terms`) and for σ(x) = x/T;
* the same step: Cholesky where ∇²F is positive definite, else |eigenvalues|
  (:func:`hdlora.theory.newton.newton_step`);
* the same Armijo backtracking (40 halvings), the same flat-objective acceptance, the same stop
  (max|∇F| ≤ tol, or a failed line search).

The numpy path is the reference: tests/test_compiled.py holds the two to 1e-10 on the same
samples. The kernel runs on one thread: `make figures` runs a notebook per core, and a
numba thread pool (``parallel=True``) on the OpenMP layer that torch also loads left spinning
threads that made the rest of a prediction 2× slower (bench/bench_precision.py).
One kernel is compiled per objective and T (:func:`kernel`), with T and the number of variables
as constants. Compiled code is cached on disk (``cache=True``, in ``__pycache__``), so a process
pays the compilation (seconds per kernel) only the first time.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from hdlora.theory import newton, symmetric
from hdlora.theory.newton import BatchMinimum, Objective, check_backend

#: the objectives of the kernel
PRETRAIN, FINETUNE_SOFTMAX, FINETUNE_LINEAR = 0, 1, 2
#: Armijo constant and number of step halvings (as in :func:`hdlora.theory.newton.minimize_batch`)
ARMIJO, HALVINGS = 1e-4, 40

_jit = numba.njit(cache=True, error_model="numpy", inline="always")


@_jit
def _softmax_row(a, T, Z, Y, need_hess, G, B, W):
    """Row a of f = ‖σ(Z) − Y‖²_F: returns Σ_j (σ(Z)_aj − Y_aj)², writes G[a] = ∂f/∂Z_a and,
    when ``need_hess``, B[a] = ∂²f/∂Z_a² (the formulas of
    :func:`hdlora.theory.prox.softmax_row_terms`); W[0], W[1] are (T,) scratch."""
    zmax = Z[a, 0]
    for j in range(1, T):
        zmax = max(zmax, Z[a, j])
    tot = 0.0
    for j in range(T):
        e = math.exp(Z[a, j] - zmax)
        W[0, j] = e
        tot += e
    f, S, P2 = 0.0, 0.0, 0.0
    for j in range(T):
        p = W[0, j] / tot
        W[0, j] = p
        r = p - Y[a, j]
        u = p * r
        W[1, j] = u
        S += u
        P2 += p * p
        f += r * r
    for j in range(T):
        G[a, j] = 2.0 * (W[1, j] - W[0, j] * S)
    if need_hess:
        C = P2 + 2 * S
        for i in range(T):
            p_i = W[0, i]
            a_i = p_i * p_i + W[1, i]
            for j in range(T):
                p_j = W[0, j]
                a_j = p_j * p_j + W[1, j]
                B[a, i, j] = p_i * (2.0 * (C * p_j - a_j)) - a_i * (2.0 * p_j)
            B[a, i, i] += 2.0 * (a_i - S * p_i)
    return f


@_jit
def _rows(kind, T, Z, Y, need_hess, G, B, W):
    """f = ‖σ(Z) − Y‖²_F summed over rows; G (T, T) = ∂f/∂Z, B[a] the Hessian of row a
    (``W``: scratch)."""
    f = 0.0
    for a in range(T):
        if kind == FINETUNE_LINEAR:
            fa = 0.0
            for j in range(T):
                r = Z[a, j] / T - Y[a, j]
                fa += r * r
                G[a, j] = 2.0 * r / T
                if need_hess:
                    for c in range(T):
                        B[a, j, c] = 2.0 / T**2 if j == c else 0.0
            f += fa
        else:
            f += _softmax_row(a, T, Z, Y, need_hess, G, B, W)
    return f


@_jit
def _pretrain(T, x, Y, pos, need_hess, g, H, Z, G, B, W):
    """The loss part of the pre-training F at h = ``x`` (L,): value, gradient and Hessian in the
    entries a ≤ b (``pos[a, c]`` is the entry of H_ac)."""
    for a in range(T):
        for c in range(T):
            Z[a, c] = x[pos[a, c]]
    f = _rows(PRETRAIN, T, Z, Y, need_hess, G, B, W)
    g[:] = 0.0
    for a in range(T):
        for c in range(T):
            g[pos[a, c]] += G[a, c]
    if need_hess:
        H[:, :] = 0.0
        for a in range(T):
            for c in range(T):
                for d in range(T):
                    H[pos[a, c], pos[a, d]] += B[a, c, d]
    return f


@_jit
def _finetune(kind, T, x, Zb, Y, need_hess, g, H, Z, G, B, W):
    """The loss part of the fine-tuning F at χ = ``x`` (T,), Z = Z_base + χχᵀ: value, gradient
    (G + Gᵀ)χ and the Hessian of the module docstring of :mod:`hdlora.theory.prox_finetune`."""
    for a in range(T):
        for c in range(T):
            Z[a, c] = Zb[a, c] + x[a] * x[c]
    f = _rows(kind, T, Z, Y, need_hess, G, B, W)
    for c in range(T):
        s = 0.0
        for d in range(T):
            s += (G[c, d] + G[d, c]) * x[d]
        g[c] = s
    if need_hess:
        Bx = W  # (B_a χ)_i
        for a in range(T):
            for i in range(T):
                t = 0.0
                for j in range(T):
                    t += B[a, i, j] * x[j]
                Bx[a, i] = t
        for c in range(T):
            for d in range(T):
                s = x[c] * Bx[c, d] + x[d] * Bx[d, c] + G[c, d] + G[d, c]
                for a in range(T):
                    s += x[a] * x[a] * B[a, c, d]
                H[c, d] = s
            xBx = 0.0
            for j in range(T):
                xBx += Bx[c, j] * x[j]
            H[c, c] += xBx
    return f


@_jit
def _objective(kind, T, k, x, i, Y, Zb, xt, pen, pos, need_hess, g, H, Z, G, B, W):
    """F = loss + Σ_k (x_k − x̃_k)²/(2 p_k) at sample i, its gradient ``g`` and Hessian ``H``."""
    if kind == PRETRAIN:
        f = _pretrain(T, x, Y[i], pos, need_hess, g, H, Z, G, B, W)
    else:
        f = _finetune(kind, T, x, Zb[i], Y[i], need_hess, g, H, Z, G, B, W)
    for j in range(k):
        d = x[j] - xt[i, j]
        f += d * d / (2.0 * pen[j])
        g[j] += d / pen[j]
        if need_hess:
            H[j, j] += 1.0 / pen[j]
    return f


@_jit
def _newton_step(k, H, g, step, L, y):
    """step = −H⁻¹g by Cholesky where H is positive definite, else with |eigenvalues| floored
    at 1e-12 (1 + max|λ|) (:func:`hdlora.theory.newton.newton_step`); ``L`` (k, k), ``y``
    (k,) scratch."""
    ok = True
    for j in range(k):
        s = H[j, j]
        for m in range(j):
            s -= L[j, m] * L[j, m]
        if not s > 0.0:
            ok = False
            break
        L[j, j] = math.sqrt(s)
        for r in range(j + 1, k):
            t = H[r, j]
            for m in range(j):
                t -= L[r, m] * L[j, m]
            L[r, j] = t / L[j, j]
    if ok:
        for r in range(k):
            t = -g[r]
            for m in range(r):
                t -= L[r, m] * y[m]
            y[r] = t / L[r, r]
        for r in range(k - 1, -1, -1):
            t = y[r]
            for m in range(r + 1, k):
                t -= L[m, r] * step[m]
            step[r] = t / L[r, r]
        return
    w, Q = np.linalg.eigh(H)
    floor = 1e-12 * (1.0 + np.abs(w).max())
    step[:] = 0.0
    for m in range(k):  # flip negative curvature: a descent direction
        c = 0.0
        for r in range(k):
            c += Q[r, m] * g[r]
        c /= max(abs(w[m]), floor)
        for r in range(k):
            step[r] -= Q[r, m] * c


@_jit
def _absmax(k, v):
    out = 0.0
    for j in range(k):
        out = max(out, abs(v[j]))
    return out


def n_variables(kind: int, T: int) -> int:
    """k: the L = T(T+1)/2 free entries of h (pre-training) or the T entries of χ."""
    return symmetric.n_entries(T) if kind == PRETRAIN else T


@functools.cache
def kernel(kind: int, T: int):
    """The damped Newton for the objective ``kind`` at one T, compiled with kind, T and
    k = T(T+1)/2 (pre-training) or T as constants: numba unrolls the loops over rows, entries
    and variables and keeps the scratch in registers (bench/bench_precision.py times it; the
    same operations in the same order as with T read from the arrays, so the same bits).
    Returns ``run(x0, Y, Zb, xt, pen, pos, tol, max_iter, x, f, g, H, n_iter, n_evals)``, which
    writes x, f, g, H, the iterations and the evaluations of each sample."""
    k = n_variables(kind, T)

    @numba.njit(cache=True, error_model="numpy")
    def run(x0, Y, Zb, xt, pen, pos, tol, max_iter, x, f, g, H, n_iter, n_evals):
        Z, G, W, B = (
            np.empty((T, T)),
            np.empty((T, T)),
            np.empty((max(T, 2), T)),
            np.empty((T, T, T)),
        )
        step, x_try, g_try, y = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
        H_try, L = np.empty((k, k)), np.empty((k, k))
        for i in range(x0.shape[0]):
            xi, gi, Hi = x[i], g[i], H[i]
            xi[:] = x0[i]
            fi = _objective(kind, T, k, xi, i, Y, Zb, xt, pen, pos, True, gi, Hi, Z, G, B, W)
            gmax = _absmax(k, gi)
            it, evals = 0, 1
            while gmax > tol and it < max_iter:
                it += 1
                _newton_step(k, Hi, gi, step, L, y)
                slope = 0.0
                for j in range(k):
                    slope += gi[j] * step[j]
                t, accepted = 1.0, False
                for _ in range(HALVINGS):
                    evals += 1
                    for j in range(k):
                        x_try[j] = xi[j] + t * step[j]
                    f_try = _objective(
                        kind, T, k, x_try, i, Y, Zb, xt, pen, pos, True, g_try, H_try, Z, G, B, W
                    )
                    armijo = f_try <= fi + ARMIJO * t * slope
                    flat = f_try <= fi + 1e-13 * (1.0 + abs(fi)) and _absmax(k, g_try) < gmax
                    if armijo or flat:
                        accepted = True
                        break
                    t /= 2.0
                if not accepted:  # the line search failed: stop this sample where it is
                    break
                xi[:] = x_try
                gi[:] = g_try
                Hi[:, :] = H_try
                fi = f_try
                gmax = _absmax(k, gi)
            f[i] = fi
            n_iter[i] = it
            n_evals[i] = evals

    return run


def _dummy() -> np.ndarray:
    return np.zeros((1, 1, 1))


def minimize_batch(
    kind: int, x0: np.ndarray, data: dict, tol: float, max_iter: int
) -> BatchMinimum:
    """The compiled :func:`hdlora.theory.newton.minimize_batch` of the objective ``kind`` from
    x0 (n, k). ``data``: ``Y`` (n, T, T) targets, ``Z_base`` (n, T, T) (fine-tuning),
    ``x_tilde`` (n, k) the penalty's centre, ``pen`` (k,) its inverse curvatures p_k, ``pos``
    (T, T) the entry of each matrix position (pre-training)."""
    n, k = x0.shape
    T = data["Y"].shape[-1]
    if k != n_variables(kind, T):
        raise ValueError(
            f"x0 must have shape (n, {n_variables(kind, T)}) for kind={kind}, T={T}; got {x0.shape}"
        )
    x, g = np.empty((n, k)), np.empty((n, k))
    H, f = np.empty((n, k, k)), np.empty(n)
    n_iter, n_evals = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    Y = np.ascontiguousarray(data["Y"], dtype=np.float64)
    Zb = np.ascontiguousarray(data.get("Z_base", _dummy()), dtype=np.float64)
    pos = np.ascontiguousarray(data.get("pos", np.zeros((1, 1), dtype=np.int64)))
    kernel(kind, T)(
        np.ascontiguousarray(x0, dtype=np.float64),
        Y,
        Zb,
        np.ascontiguousarray(data["x_tilde"], dtype=np.float64),
        np.ascontiguousarray(data["pen"], dtype=np.float64),
        pos,
        float(tol),
        int(max_iter),
        x,
        f,
        g,
        H,
        n_iter,
        n_evals,
    )
    return BatchMinimum(
        x=x,
        f=f,
        g=g,
        H=H,
        n_iter=int(n_iter.max(initial=0)),
        n_steps=int(n_iter.sum()),
        n_evals=int(n_evals.sum()),
    )


def batch_solver(backend, objective: Objective, kind: int, data: dict):
    """``solve(x0, tol, max_iter)`` for :func:`hdlora.theory.newton.minimize_starts`: the numpy
    :func:`~hdlora.theory.newton.minimize_batch` of ``objective``, or the compiled one of
    ``kind`` and ``data`` (:func:`minimize_batch`), by ``backend`` (None: the default)."""
    if check_backend(backend) == "numpy":
        return lambda x0, tol, max_iter: newton.minimize_batch(x0, objective, tol, max_iter)
    return lambda x0, tol, max_iter: minimize_batch(kind, x0, data, tol, max_iter)
