"""The model of §2 written out in numpy for the tests: an independent reference for the library.

Everything is built from explicit matrices, following the equations literally:

    σ: the row-wise softmax or x ↦ x/T                                              (§2)
    A_μ = D⁻¹ X_μ S X_μᵀ,  ŷ_μ = σ(A_μ − E_X A) X_μ,  S = P^{-1/2} W Wᵀ + w wᵀ         (eq. 1)
    y_μ = σ(A*_μ − E_X A* + ξ_μ) X_μ,  S* = P0^{-1/2} W* W*ᵀ (+ w* w*ᵀ for 𝒫')        (eq. 6)
    E_X A = δ_ab D⁻¹ Tr S (population, eq. 34) or the mean of A over the set (eq. 1 literally)
"""

import numpy as np


def sigma(Z, activation):
    """σ of §2 on (..., T, T)."""
    if activation == "linear":
        return Z / Z.shape[-1]
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def gram_S(W, w=None):
    """S = P^{-1/2} W Wᵀ (+ w wᵀ) for W of shape (D, P)."""
    S = W @ W.T / np.sqrt(W.shape[1])
    return S if w is None else S + np.outer(w, w)


def centred(X, S, centering="population"):
    """A − E_X A for A_μ = D⁻¹ X_μ S X_μᵀ, X of shape (n, T, D)."""
    A = np.einsum("nai,ij,nbj->nab", X, S, X) / X.shape[-1]
    if centering == "population":
        return A - np.trace(S) / X.shape[-1] * np.eye(X.shape[1])
    return A - A.mean(axis=0)


def outputs(X, S, activation, centering="population", noise=None):
    """σ(A − E_X A [+ ξ]) X: the student's ŷ, or the teacher's y with its noise ξ."""
    Z = centred(X, S, centering)
    if noise is not None:
        Z = Z + noise
    return sigma(Z, activation) @ X


def sequence_errors(y_hat, y):
    """D⁻¹‖ŷ_μ − y_μ‖²_F per sequence."""
    return ((y_hat - y) ** 2).sum(axis=(-1, -2)) / y.shape[-1]
