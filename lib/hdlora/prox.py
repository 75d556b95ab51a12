r"""The pre-training proximal operator, eqs. (15), (41)–(42), batched over Monte-Carlo samples.

    Prox(z*, z̃) = argmax_{h ∈ S(T)} Ψ(h; z*, z̃),
    Ψ(h; z*, z̃) = −‖σ(h) − σ(z*)‖²_F − Σ_{a≤b} (z̃_ab − h_ab)² / (2V(1 + δ_ab)).

Matrices are handled through their L = T(T+1)/2 entries a ≤ b (:mod:`hdlora.symmetric`); arrays
have shape (n, L). We minimise F = −Ψ.

* Linear σ(x) = x/T: F is quadratic and Prox = (T⁻² z* + (4V)⁻¹ z̃)/(T⁻² + (4V)⁻¹)
  entrywise (App. C).
* Softmax: F is smooth but not convex, and flat in σ along h → h + c 11ᵀ (only the penalty
  fixes that direction). All samples are solved at once by a damped Newton method with analytic
  gradient and Hessian (negative curvature flipped, backtracking Armijo line search), from
  several starts — z̃ (the V → 0 limit), z* (the V → ∞ limit, σ(h) = σ(z*)) and an optional
  warm start — keeping the lowest F per sample. A sample is converged when its stationarity
  residual max |∂F/∂h| · min(1, V) ≤ ``tol`` (for V < 1 this is the residual of the fixed-point
  form h = z̃ − V s ∇f(h), in the units of h, since the penalty's curvature 1/(V s) amplifies
  rounding); failures and disagreements between starts are counted.

The Hessian of F at the proximal, −∇²Ψ, is returned for the replicon condition (eq. 75).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from hdlora.activations import softmax_rows
from hdlora.symmetric import embedding, multiplicity, to_matrix

log = logging.getLogger(__name__)


@dataclass
class ProxResult:
    """Proximal of a batch: ``h`` (n, L), ``hessian`` (n, L, L) = −∇²Ψ at h, ``objective``
    F(h) = −Ψ (n,), ``grad_max`` the stationarity residual per sample (n,) (max |∇F| · min(1, V)),
    ``n_failed`` samples above ``tol``,
    ``n_disagree`` samples whose starts reached different local minima, ``n_iter`` Newton
    iterations (max over starts)."""

    h: np.ndarray
    hessian: np.ndarray
    objective: np.ndarray
    grad_max: np.ndarray
    n_failed: int
    n_disagree: int
    n_iter: int


def _softmax_terms(h, Y, T, need_hess=True):
    """Loss ‖σ(H) − Y‖²_F, its gradient (n, L) and Hessian (n, L, L) in the entries a ≤ b."""
    n = h.shape[0]
    E = embedding(T)
    P = softmax_rows(to_matrix(h, T))
    R = P - Y
    f = (R * R).sum(axis=(-1, -2))
    U = P * R
    S = U.sum(axis=-1, keepdims=True)  # (n, T, 1)
    G = 2.0 * (U - P * S)  # ∂f/∂H_ai for unconstrained H (row-wise softmax)
    grad = G.reshape(n, T * T) @ E
    if not need_hess:
        return f, grad, None
    # per row a: ∂²f/∂H_ai∂H_aj = 2[(J J)_ij + u_i δ_ij − u_i p_j − p_i u_j + 2S p_i p_j
    #   − S p_i δ_ij] with J = diag(p) − p pᵀ, u = p∘r, S = Σ u; expanding J J:
    #   = 2[δ_ij d_i + c p_i p_j − a_i p_j − p_i a_j], a = p² + u, c = Σp² + 2S, d = a − S p.
    P2 = P * P
    A = P2 + U
    C = P2.sum(axis=-1, keepdims=True) + 2 * S
    Dg = A - S * P
    blocks = C[..., None] * P[..., :, None] * P[..., None, :]
    blocks -= A[..., :, None] * P[..., None, :] + P[..., :, None] * A[..., None, :]
    blocks += Dg[..., :, None] * np.eye(T)
    hess = (2.0 * blocks.reshape(n, T**3)) @ _row_block_map(T)
    return f, grad, hess.reshape(n, len(E[0]), len(E[0]))


@functools.lru_cache(maxsize=16)
def _row_block_map(T: int) -> np.ndarray:
    """K (T³, L²) with Σ_a E3[a]ᵀ B_a E3[a] = vec(B) K for row blocks B (T, T, T)."""
    E3 = embedding(T).reshape(T, T, -1)
    L = E3.shape[-1]
    return np.einsum("aik,ajl->aijkl", E3, E3).reshape(T**3, L * L)


def loss_terms(h: np.ndarray, z_star: np.ndarray, T: int, activation: str):
    """f = ‖σ(h) − σ(z*)‖²_F, its gradient (n, L) and Hessian (n, L, L) in the entries a ≤ b."""
    if activation == "softmax":
        return _softmax_terms(h, softmax_rows(to_matrix(z_star, T)), T)
    if activation == "linear":
        k = 2.0 - (multiplicity(T) == 2)  # ‖H‖²_F = Σ_{a≤b} k_ab h_ab², k = 2 − δ_ab
        d = h - z_star
        f = (k * d * d).sum(axis=-1) / T**2
        hess = np.broadcast_to(np.diag(2 * k / T**2), h.shape[:-1] + (len(k), len(k))).copy()
        return f, 2 * k * d / T**2, hess
    raise ValueError(f"activation must be 'softmax' or 'linear', got {activation!r}")


def _objective(h, Y, zt, V, s, T, need_hess=True):
    f, g, H = _softmax_terms(h, Y, T, need_hess)
    d = h - zt
    f = f + (d * d / (2 * V * s)).sum(axis=-1)
    g = g + d / (V * s)
    if H is not None:
        H = H + np.eye(len(s)) / (V * s)
    return f, g, H


def _newton_step(H, g):
    """−H⁻¹g where H is positive definite (Cholesky), else with |eigenvalues| (descent)."""
    Ht, gt = torch.from_numpy(H), torch.from_numpy(g)[..., None]
    chol, info = torch.linalg.cholesky_ex(Ht)
    step = -torch.cholesky_solve(gt, chol)[..., 0].numpy()
    bad = info.numpy() != 0
    if bad.any():
        w, Qm = np.linalg.eigh(H[bad])
        floor = 1e-12 * (1 + np.abs(w).max(axis=-1, keepdims=True))
        w = np.maximum(np.abs(w), floor)  # flip negative curvature: a descent direction
        step[bad] = -np.einsum("nij,nj->ni", Qm, np.einsum("nji,nj->ni", Qm, g[bad]) / w)
    return step


def _newton(h, Y, zt, V, s, T, tol, max_iter):
    tol = tol / min(1.0, V)  # on max|∇F|: see the module docstring
    return _newton_abs(h, Y, zt, V, s, T, tol, max_iter)


def _newton_abs(h, Y, zt, V, s, T, tol, max_iter):
    """Damped Newton from h on every sample; returns (h, F, ∇F, ∇²F, n_iter).

    A step is accepted on Armijo's condition, or, when F no longer changes within rounding,
    when it lowers max |∇F| (the last quadratically convergent steps).
    """
    h = h.copy()
    f, g, H = _objective(h, Y, zt, V, s, T)
    gmax = np.abs(g).max(axis=-1)
    active = gmax > tol
    it = 0
    while active.any() and it < max_iter:
        it += 1
        idx = np.nonzero(active)[0]
        hi, fi, gi, Yi, zi = h[idx], f[idx], g[idx], Y[idx], zt[idx]
        step = _newton_step(H[idx], gi)
        slope = (gi * step).sum(axis=-1)
        t = np.ones(len(idx))
        todo = np.ones(len(idx), dtype=bool)
        h_new, f_new, g_new = hi.copy(), fi.copy(), gi.copy()
        for _ in range(40):
            k = np.nonzero(todo)[0]
            h_try = hi[k] + t[k, None] * step[k]
            f_try, g_try, _ = _objective(h_try, Yi[k], zi[k], V, s, T, need_hess=False)
            armijo = f_try <= fi[k] + 1e-4 * t[k] * slope[k]
            flat = (f_try <= fi[k] + 1e-13 * (1 + np.abs(fi[k]))) & (
                np.abs(g_try).max(axis=-1) < gmax[idx][k]
            )
            ok = armijo | flat
            acc = k[ok]
            h_new[acc], f_new[acc], g_new[acc] = h_try[ok], f_try[ok], g_try[ok]
            todo[acc] = False
            if not todo.any():
                break
            t[todo] /= 2
        h[idx] = h_new
        f_i, g_i, H_i = _objective(h_new, Yi, zi, V, s, T)
        f[idx], g[idx], H[idx] = f_i, g_i, H_i
        gmax[idx] = np.abs(g_i).max(axis=-1)
        active[idx] = (gmax[idx] > tol) & ~todo  # stop samples whose line search failed
    return h, f, g, H, it


def pretrain_prox(
    z_star: np.ndarray,
    z_tilde: np.ndarray,
    V: float,
    T: int,
    activation: str = "softmax",
    *,
    warm: np.ndarray | None = None,
    starts: tuple[str, ...] = ("z_tilde", "z_star"),
    tol: float = 1e-10,
    max_iter: int = 100,
) -> ProxResult:
    r"""Prox(z*, z̃) of eq. (41) for a batch.

    Parameters
    ----------
    z_star, z_tilde : (n, L) entries a ≤ b of z* and z̃.
    V : the inverse curvature V > 0.
    T : number of tokens.
    activation : "softmax" or "linear".
    warm : (n, L) optional warm start (e.g. the previous fixed-point iteration's proximal).
    starts : which of "z_tilde", "z_star" to also start from (softmax).
    tol : stationarity tolerance on max |∂F/∂h|.
    """
    if not V > 0:
        raise ValueError(f"V must be > 0, got V={V!r}")
    s = multiplicity(T)
    n, L = z_star.shape
    if activation == "linear":
        c = 4.0 / T**2
        h = (c * z_star + z_tilde / V) / (c + 1.0 / V)
        # F = Σ k_ab (h − z*)²/T² + penalty, k = 2 − δ: Hessian diag(2k/T² + 1/(V s))
        k = 2.0 - (s == 2)
        hdiag = 2 * k / T**2 + 1.0 / (V * s)
        hess = np.broadcast_to(np.diag(hdiag), (n, L, L)).copy()
        Fval = (k * (h - z_star) ** 2).sum(-1) / T**2 + ((h - z_tilde) ** 2 / (2 * V * s)).sum(-1)
        return ProxResult(h, hess, Fval, np.zeros(n), 0, 0, 0)
    if activation != "softmax":
        raise ValueError(f"activation must be 'softmax' or 'linear', got {activation!r}")
    Y = softmax_rows(to_matrix(z_star, T))
    inits = [warm] if warm is not None else []
    inits += [{"z_tilde": z_tilde, "z_star": z_star}[name] for name in starts]
    k = len(inits)
    h0 = np.concatenate(inits, axis=0)
    h, f, g, H, it = _newton(
        h0, np.tile(Y, (k, 1, 1)), np.tile(z_tilde, (k, 1)), V, s, T, tol, max_iter
    )
    h, f, g, H = (x.reshape((k, n) + x.shape[1:]) for x in (h, f, g, H))
    gmax = np.abs(g).max(axis=-1) * min(1.0, V)  # (k, n) stationarity residuals
    score = np.where(gmax <= tol, f, np.inf)  # prefer converged starts, then lowest F
    best = np.argmin(np.where(np.isinf(score).all(axis=0), f, score), axis=0)
    rows = np.arange(n)
    hb, fb, gb, Hb = h[best, rows], f[best, rows], gmax[best, rows], H[best, rows]
    differ = (np.abs(h - hb[None]).max(axis=-1) > 1e-6) & (gmax <= tol)
    n_disagree = int(differ.any(axis=0).sum())
    n_failed = int((gb > tol).sum())
    if n_failed:
        log.warning(
            "pre-training proximal: %d of %d samples above tol=%.0e (max %.2e)",
            n_failed,
            n,
            tol,
            gb.max(),
        )
    return ProxResult(hb, Hb, fb, gb, n_failed, n_disagree, it)
