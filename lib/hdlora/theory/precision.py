r"""Standard errors of a Monte-Carlo fixed point from independent randomisations (delta method).

A state evolution solves x = G_n(x), where G_n is the map with the conjugates averaged over the
n samples of one solve (common random numbers). With the samples split into K independent,
identically distributed blocks (the RQMC randomisations of :mod:`hdlora.theory.laws`, or
contiguous i.i.d. batches), write G_k for the map evaluated with the conjugates of block k
alone. To first order in the Monte-Carlo error,

    x̂ − x = (I − J)⁻¹ (G_n(x) − G(x)),   Cov(G_n) ≈ Cov_k(G_k) / K,

with J = ∂G/∂x the Jacobian of the map at the fixed point (forward differences on a sub-sample,
common random numbers). So

    Cov(x̂) ≈ A Cov_k(G_k) Aᵀ / K,   A = (I − J)⁻¹,

and an observable f(x̂) computed on separate test samples has se² = ∇fᵀ Cov(x̂) ∇f + se²_test.
The spectral radius of J says how much the fixed point amplifies the noise of one evaluation:
a slow direction (ρ(J) → 1) blows A up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class FixedPointCovariance:
    """``cov`` Cov(x̂) (k, k); ``jacobian`` J; ``spectral_radius`` ρ(J); ``map_cov`` Cov(G_n)."""

    cov: np.ndarray
    jacobian: np.ndarray
    spectral_radius: float
    map_cov: np.ndarray

    def se(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.cov), 0.0))


def block_means(per_sample: np.ndarray, blocks: int) -> np.ndarray:
    """(blocks, ...) means of ``blocks`` contiguous equal batches of the rows of per_sample."""
    n = len(per_sample) // blocks * blocks
    return per_sample[:n].reshape((blocks, -1) + per_sample.shape[1:]).mean(axis=1)


def jacobian(G: Callable[[np.ndarray], np.ndarray], x: np.ndarray, rel_step: float = 1e-4):
    """Forward-difference Jacobian of G at x (G is deterministic: common random numbers).

    Where the forward step leaves the domain of G (it raises
    :class:`~hdlora.theory.fixed_point.OutOfDomain`, e.g. B = Q − M²/A0 < 0 next to a fixed
    point with B ≈ 0), the backward difference is used for that column."""
    from hdlora.theory.fixed_point import OutOfDomain

    x = np.asarray(x, dtype=float)
    g0 = np.asarray(G(x), dtype=float)
    J = np.empty((len(g0), len(x)))
    for j in range(len(x)):
        h = rel_step * max(abs(x[j]), 1e-3)
        for step in (h, -h):
            xp = x.copy()
            xp[j] += step
            try:
                J[:, j] = (np.asarray(G(xp), dtype=float) - g0) / step
                break
            except OutOfDomain:
                if step < 0:
                    raise
    return J


def fixed_point_covariance(J: np.ndarray, G_blocks: np.ndarray) -> FixedPointCovariance:
    """Cov(x̂) = A Cov_k(G_k) Aᵀ / K with A = (I − J)⁻¹ (module docstring).

    ``G_blocks`` (K, k): the map evaluated at the fixed point with each block's conjugates."""
    K = len(G_blocks)
    S = np.atleast_2d(np.cov(G_blocks, rowvar=False)) / K
    A = np.linalg.inv(np.eye(len(J)) - J)
    rho = float(np.abs(np.linalg.eigvals(J)).max())
    return FixedPointCovariance(A @ S @ A.T, J, rho, S)


def propagate(grad: np.ndarray, cov: np.ndarray, se_test: float = 0.0) -> float:
    """√(∇fᵀ Cov ∇f + se_test²)."""
    grad = np.asarray(grad, dtype=float)
    return float(np.sqrt(max(grad @ cov @ grad, 0.0) + se_test**2))


def variance_shares(grad: np.ndarray, fc: FixedPointCovariance, se_test: float = 0.0):
    r"""Where the variance of an observable f(x̂) comes from: se² = cᵀ S c + se²_test with
    c = Aᵀ∇f, A = (I − J)⁻¹ and S = Cov(G_n) the covariance of the map's components (the noise of
    the conjugate estimators, e.g. m̂, q̂, v̂, as it reaches the map). Returns (k + 1,): the
    shares c_j (S c)_j / se² of each component j (they add up with cross terms included, so one
    can be slightly negative) and the share se²_test / se² of the test samples."""
    grad = np.asarray(grad, dtype=float)
    A = np.linalg.inv(np.eye(len(fc.jacobian)) - fc.jacobian)
    c = A.T @ grad
    parts = np.append(c * (fc.map_cov @ c), se_test**2)
    total = parts.sum()
    return parts / total if total > 0 else np.full(len(parts), np.nan)


def gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, rel_step: float = 1e-4):
    """Central-difference gradient(s) of f (returns (k,) or (m, k) for vector f)."""
    x = np.asarray(x, dtype=float)
    cols = []
    for j in range(len(x)):
        h = rel_step * max(abs(x[j]), 1e-3)
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        cols.append((np.asarray(f(xp), dtype=float) - np.asarray(f(xm), dtype=float)) / (2 * h))
    return np.stack(cols, axis=-1)
