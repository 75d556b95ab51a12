r"""Coordinates on symmetric T×T matrices: the L = T(T+1)/2 entries a ≤ b (row-major).

The pre-training proximal (eqs. 15, 41–42) and the channel of eq. (47) work with these L free
entries and their multiplicities s_ab = 1 + δ_ab.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=16)
def upper_indices(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the entries a ≤ b."""
    return np.triu_indices(T)


@functools.lru_cache(maxsize=16)
def multiplicity(T: int) -> np.ndarray:
    """s_ab = 1 + δ_ab for a ≤ b, shape (L,)."""
    a, b = upper_indices(T)
    return 1.0 + (a == b)


@functools.lru_cache(maxsize=16)
def embedding(T: int) -> np.ndarray:
    """The (T², L) 0/1 matrix E with vec(H) = E h for symmetric H with upper entries h."""
    a, b = upper_indices(T)
    E = np.zeros((T * T, len(a)))
    for k, (i, j) in enumerate(zip(a, b, strict=True)):
        E[i * T + j, k] = 1.0
        E[j * T + i, k] = 1.0
    return E


@functools.lru_cache(maxsize=16)
def positions(T: int) -> np.ndarray:
    """(T, T) integer array: the entry k (of the L entries a ≤ b) that holds position (a, c)."""
    a, b = upper_indices(T)
    pos = np.empty((T, T), dtype=np.int64)
    pos[a, b] = np.arange(len(a))
    pos[b, a] = np.arange(len(a))
    return pos


def to_matrix(h: np.ndarray, T: int) -> np.ndarray:
    """(..., L) upper entries → (..., T, T) symmetric matrices."""
    return (h @ embedding(T).T).reshape(h.shape[:-1] + (T, T))


def n_entries(T: int) -> int:
    return T * (T + 1) // 2
