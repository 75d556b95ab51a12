r"""The pre-training proximal operator, eqs. (15), (41)–(42), batched over Monte-Carlo samples.

    Prox(z*, z̃) = argmax_{h ∈ S(T)} Ψ(h; z*, z̃),
    Ψ(h; z*, z̃) = −‖σ(h) − σ(z*)‖²_F − Σ_{a≤b} (z̃_ab − h_ab)² / (2V(1 + δ_ab)).

Matrices are handled through their L = T(T+1)/2 entries a ≤ b
(:mod:`hdlora.theory.symmetric`); arrays have shape (n, L). We minimise F = −Ψ.

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
from dataclasses import dataclass

import numpy as np

from hdlora.theory import compiled
from hdlora.theory.newton import minimize_starts
from hdlora.theory.rowops import softmax_last, sum_last
from hdlora.theory.symmetric import embedding, multiplicity, positions, to_matrix


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

    @property
    def point(self) -> np.ndarray:
        """The maximisers h (n, L)."""
        return self.h


def softmax_row_terms(Z: np.ndarray, Y: np.ndarray, need_hess: bool = True):
    r"""f = ‖σ(Z) − Y‖²_F for the row-wise softmax, G = ∂f/∂Z (n, T, T) and the row Hessians
    B (n, T, T, T), B[a]_ij = ∂²f/∂Z_ai∂Z_aj (None unless ``need_hess``).

    Per row a, with p = σ(Z)_a, r = p − Y_a, u = p∘r, S = Σ u, a = p² + u, c = Σp² + 2S,
    d = a − S p:  G_a = 2(u − S p),  B[a] = 2[diag(d) + c p pᵀ − a pᵀ − p aᵀ]
    (from ∂p/∂Z = diag(p) − p pᵀ). The one softmax Hessian of both proximals."""
    P = softmax_last(Z)
    R = P - Y
    U = P * R
    S = sum_last(U, keepdims=True)  # (n, T, 1)
    f = sum_last(sum_last(R * R))
    G = 2.0 * (U - P * S)
    if not need_hess:
        return f, G, None
    T = Z.shape[-1]
    P2 = P * P
    A = P2 + U
    C = sum_last(P2, keepdims=True) + 2 * S
    Dg = 2.0 * (A - S * P)
    # 2[c p pᵀ − a pᵀ − p aᵀ] = p wᵀ − a (2p)ᵀ with w = 2(c p − a): two outer products, as
    # batched matmuls (2.3× faster than broadcasting over the two short axes)
    B = P[..., :, None] @ (2.0 * (C * P - A))[..., None, :]
    B -= A[..., :, None] @ (2.0 * P)[..., None, :]
    B.reshape(B.shape[:-2] + (T * T,))[..., :: T + 1] += Dg  # + 2 diag(d), in place
    return f, G, B


def _softmax_terms(h, Y, T, need_hess=True):
    """Loss ‖σ(H) − Y‖²_F, its gradient (n, L) and Hessian (n, L, L) in the entries a ≤ b."""
    n = h.shape[0]
    E = embedding(T)
    f, G, B = softmax_row_terms(to_matrix(h, T), Y, need_hess)
    grad = G.reshape(n, T * T) @ E
    if not need_hess:
        return f, grad, None
    L = E.shape[1]
    hess = B.reshape(n, T**3) @ _row_block_map(T)
    return f, grad, hess.reshape(n, L, L)


@functools.lru_cache(maxsize=16)
def _row_block_map(T: int) -> np.ndarray:
    """K (T³, L²) with Σ_a E3[a]ᵀ B_a E3[a] = vec(B) K for row blocks B (T, T, T)."""
    E3 = embedding(T).reshape(T, T, -1)
    L = E3.shape[-1]
    return np.einsum("aik,ajl->aijkl", E3, E3).reshape(T**3, L * L)


def loss_terms(h: np.ndarray, z_star: np.ndarray, T: int, activation: str):
    """f = ‖σ(h) − σ(z*)‖²_F, its gradient (n, L) and Hessian (n, L, L) in the entries a ≤ b."""
    if activation == "softmax":
        return _softmax_terms(h, softmax_last(to_matrix(z_star, T)), T)
    if activation == "linear":
        k = 2.0 - (multiplicity(T) == 2)  # ‖H‖²_F = Σ_{a≤b} k_ab h_ab², k = 2 − δ_ab
        d = h - z_star
        f = (k * d * d).sum(axis=-1) / T**2
        hess = np.broadcast_to(np.diag(2 * k / T**2), h.shape[:-1] + (len(k), len(k))).copy()
        return f, 2 * k * d / T**2, hess
    raise ValueError(f"activation must be 'softmax' or 'linear', got {activation!r}")


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
    backend: str | None = None,
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
    backend : the damped Newton's implementation, "numba" (None) or "numpy"
        (:data:`hdlora.theory.newton.BACKENDS`).
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
    Y = softmax_last(to_matrix(z_star, T))
    eye = np.eye(L)

    def objective(h, rows, need_hess):
        f, g, H = _softmax_terms(h, Y[rows], T, need_hess)
        d = h - z_tilde[rows]
        f = f + (d * d / (2 * V * s)).sum(axis=-1)
        g = g + d / (V * s)
        if H is not None:
            H = H + eye / (V * s)
        return f, g, H

    inits = [warm] if warm is not None else []
    inits += [{"z_tilde": z_tilde, "z_star": z_star}[name] for name in starts]
    scale = min(1.0, V)  # stationarity residual max|∇F| · min(1, V): see the module docstring
    data = {"Y": Y, "x_tilde": z_tilde, "pen": V * s, "pos": positions(T)}
    solve = compiled.batch_solver(backend, objective, compiled.PRETRAIN, data)
    best = minimize_starts(inits, solve, scale, tol, max_iter, "pre-training")
    return ProxResult(
        h=best.x,
        hessian=best.H,
        objective=best.f,
        grad_max=best.residual,
        n_failed=best.n_failed,
        n_disagree=best.n_disagree,
        n_iter=best.n_iter,
    )
