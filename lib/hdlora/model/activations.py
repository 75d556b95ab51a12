"""The activations σ of eq. (1): row-wise softmax and the rescaled identity x ↦ x/T.

Both act on the last two axes of an array of T×T matrices, shape (..., T, T), and accept
numpy arrays or torch tensors (the simulator uses torch, the theory numpy).
"""

from __future__ import annotations

import numpy as np

from hdlora.params import ACTIVATIONS


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def softmax_rows(x):
    """Row-wise softmax of (..., T, T) matrices: σ(x)_ab = e^{x_ab} / Σ_c e^{x_ac}."""
    if _is_torch(x):
        return x.softmax(dim=-1)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def linear(x):
    """The rescaled identity σ(x) = x/T of §2 (T = x.shape[-1])."""
    return x / x.shape[-1]


def activation(name: str):
    """The function σ named ``name`` ∈ {"softmax", "linear"}."""
    if name == "softmax":
        return softmax_rows
    if name == "linear":
        return linear
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got activation={name!r}")
