r"""The teacher and the synthetic data model of eq. (6) (paper §2), in torch.

Shapes: D the token dimension, T the number of tokens, n the number of sequences.

* Teacher: W* ∈ R^{D×P0} and w* ∈ R^D with i.i.d. N(0, 1) entries, S* = P0^{-1/2} W* W*ᵀ
  (``teacher="gaussian"``, the paper's prior), or that draw rescaled onto the sphere of its
  D → ∞ limit, ‖w*‖² = D and D⁻² Tr S*² = 1 + κ0 (``teacher="sphere"``): see
  :func:`draw_teacher`.
* Sequences: X ∈ R^{n×T×D} with i.i.d. N(0, 1) entries.
* Noise: symmetric ξ ∈ S(T) with ξ_ab ~ N(0, Δ/(2 − δ_ab)) for a ≤ b.
* Pre-training target pre-activation, eq. (10):
  z* = D⁻¹ X S* Xᵀ − E_X[·] + ξ, and y = σ(z*) X.
* Fine-tuning target, eq. (6): z*' = D⁻¹ X (S* + w*w*ᵀ) Xᵀ − E_X[·] + ξ'
  = z*_ext + χ*χ*ᵀ − q0 I_T (population centring), with χ* = D^{-1/2} X w*.

The centring E_X A: eq. (1) calls it an empirical mean over the set; the theory uses its
population value, eq. (34): (E_X A)_ab = δ_ab D⁻¹ Tr(S). ``centering="population"`` (default)
uses eq. (34); ``centering="empirical"`` uses the mean of A over the n sequences of the set.

Since y = σ(z*) X exactly, a set stores σ(z*) (the T×T "target attention") and the Gram
matrices G = X Xᵀ/D, from which the sequence loss D⁻¹‖σ(z) X − y‖²_F = Tr(E G Eᵀ),
E = σ(z) − σ(z*), is exact (no D → ∞ reduction is made); ``outputs()`` rebuilds y.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from hdlora.model.activations import activation
from hdlora.params import Params

Centering = Literal["population", "empirical"]
CENTERINGS = ("population", "empirical")
TeacherPrior = Literal["gaussian", "sphere"]
TEACHERS = ("gaussian", "sphere")

#: Independent random streams of one experiment (one seed → the same numbers everywhere).
STREAMS = ("teacher", "pretrain", "finetune", "test_pretrain", "test_finetune")


def torch_generator(seed_sequence: np.random.SeedSequence) -> torch.Generator:
    """The CPU torch generator of a numpy seed sequence: the one way a seed becomes a stream."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed_sequence.generate_state(1, dtype=np.uint64)[0] % (2**63)))
    return g


def stream_generators(seed: int, streams: tuple[str, ...], spawn_key=()) -> dict:
    """One CPU torch generator per name of ``streams``, all derived from ``seed`` (and
    ``spawn_key``, which keeps the streams of different simulators apart)."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={seed!r}")
    children = np.random.SeedSequence(int(seed), spawn_key=spawn_key).spawn(len(streams))
    return {name: torch_generator(c) for name, c in zip(streams, children, strict=True)}


def generators(seed: int) -> dict[str, torch.Generator]:
    """One CPU torch generator per stream of :data:`STREAMS`, all derived from ``seed``."""
    return stream_generators(seed, STREAMS)


def check_teacher(teacher: str) -> None:
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got teacher={teacher!r}")


def on_sphere(w_star: torch.Tensor) -> torch.Tensor:
    """w* rescaled to q0 = D⁻¹‖w*‖² = 1 (eq. 9), the value the theory takes."""
    return w_star * (w_star.shape[0] / (w_star @ w_star)) ** 0.5


def check_centering(centering: str) -> None:
    if centering not in CENTERINGS:
        raise ValueError(f"centering must be one of {CENTERINGS}, got centering={centering!r}")


@dataclass
class Teacher:
    """Target weights W* (D, P0) and w* (D,), eq. (6)."""

    W_star: torch.Tensor
    w_star: torch.Tensor

    @property
    def D(self) -> int:
        return self.W_star.shape[0]

    @property
    def P0(self) -> int:
        return self.W_star.shape[1]

    @property
    def q0(self) -> float:
        """q0 = D⁻¹‖w*‖² (eq. 9), → 1."""
        return float(self.w_star @ self.w_star) / self.D

    def to(self, device, dtype) -> Teacher:
        return Teacher(self.W_star.to(device, dtype), self.w_star.to(device, dtype))


@dataclass
class SequenceSet:
    r"""n sequences with what the losses need.

    Attributes
    ----------
    X : (n, T, D) input sequences.
    xi : (n, T, T) symmetric label noise.
    gram : (n, T, T) G = X Xᵀ / D.
    z_star : (n, T, T) teacher pre-activation (eq. (10), or its fine-tuning form of eq. (6)).
    target : (n, T, T) σ(z*): the output is y = σ(z*) X.
    chi_star : (n, T) χ* = D^{-1/2} X w* (fine-tuning sets) or None.
    z_star_ext : (n, T, T) the extensive part D⁻¹XS*Xᵀ − centring + ξ of a fine-tuning set's
        z* (the z* of eq. (63)), or None for pre-training sets (where it equals z_star).
    """

    X: torch.Tensor
    xi: torch.Tensor
    gram: torch.Tensor
    z_star: torch.Tensor
    target: torch.Tensor
    chi_star: torch.Tensor | None = None
    z_star_ext: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def to(self, device, dtype) -> SequenceSet:
        def conv(t):
            return None if t is None else t.to(device, dtype)

        return SequenceSet(*(conv(getattr(self, f)) for f in self.__dataclass_fields__))

    def outputs(self) -> torch.Tensor:
        """The output sequences y = σ(z*) X, shape (n, T, D)."""
        return self.target @ self.X


def draw_teacher(
    D: int, params: Params, generator: torch.Generator, teacher: TeacherPrior = "gaussian"
) -> Teacher:
    r"""W* ∈ R^{D×P0}, w* ∈ R^D with i.i.d. N(0,1) entries (eq. 6).

    ``teacher="sphere"`` rescales that draw so that its norms are those of the D → ∞ limit
    the theory describes (text after eq. 9): q0 = D⁻¹‖w*‖² = 1 and Q0 = D⁻² Tr S*² = 1 + κ0
    (W* → c W*, Q0 → c⁴ Q0). Under the i.i.d. prior q0 has standard deviation √(2/D) (0.14 at
    D = 100), and the fine-tuning errors move with it: a shared draw biases every run of a
    comparison alike, which no number of runs at one seed set can show."""
    check_teacher(teacher)
    sizes = params.sizes(D)
    W_star = torch.randn(D, sizes.P0, generator=generator, dtype=torch.float64)
    w_star = torch.randn(D, generator=generator, dtype=torch.float64)
    if teacher == "sphere":
        Q0 = float((W_star.T @ W_star).square().sum()) / (sizes.P0 * D**2)
        W_star = W_star * (params.Q0 / Q0) ** 0.25
        w_star = on_sphere(w_star)
    return Teacher(W_star, w_star)


def draw_noise(n: int, T: int, Delta: float, generator: torch.Generator) -> torch.Tensor:
    """Symmetric noise ξ of shape (n, T, T): ξ_ab ~ N(0, Δ/(2 − δ_ab)) for a ≤ b (eq. 6)."""
    g = torch.randn(n, T, T, generator=generator, dtype=torch.float64)
    upper = torch.triu(g, diagonal=1) * (Delta / 2) ** 0.5
    diag = torch.diag_embed(torch.diagonal(g, dim1=-2, dim2=-1)) * Delta**0.5
    return upper + upper.transpose(-1, -2) + diag


def quadratic_preactivation(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    r"""A = D⁻¹ X (P^{-1/2} W Wᵀ) Xᵀ for X (n, T, D), W (D, P); returns (n, T, T).

    Computed as D⁻¹ P^{-1/2} U Uᵀ with U = X W (n, T, P): the cost is one batched product.
    """
    D, P = W.shape
    U = X @ W
    return (U @ U.transpose(-1, -2)) / (D * P**0.5)


def population_center(W: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    r"""Scalar c with (E_X A)_ab = δ_ab c, eq. (34): c = D⁻¹ Tr(P^{-1/2} W Wᵀ + w wᵀ)."""
    D, P = W.shape
    c = (W * W).sum() / (D * P**0.5)
    if w is not None:
        c = c + (w @ w) / D
    return c


def center(A: torch.Tensor, c_pop: torch.Tensor, centering: Centering) -> torch.Tensor:
    """A − E_X A with the population value δ_ab c_pop or the empirical mean over the set."""
    if centering == "population":
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        return A - c_pop * eye
    if centering == "empirical":
        return A - A.mean(dim=0, keepdim=True)
    raise ValueError(f"centering must be one of {CENTERINGS}, got centering={centering!r}")


def draw_sequences(n: int, D: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """X ∈ R^{n×T×D} with i.i.d. N(0, 1) entries (the law 𝒫0 of eq. 6)."""
    return torch.randn(n, T, D, generator=generator, dtype=torch.float64)


def pretrain_set(
    teacher: Teacher,
    params: Params,
    n: int,
    generator: torch.Generator,
    centering: Centering = "population",
) -> SequenceSet:
    """n pre-training samples (X, y) ~ 𝒫 of eq. (6)."""
    check_centering(centering)
    X = draw_sequences(n, teacher.D, params.T, generator)
    xi = draw_noise(n, params.T, params.Delta, generator)
    return _label_pretrain(teacher, params, X, xi, centering)


def _label_pretrain(teacher, params, X, xi, centering) -> SequenceSet:
    A_star = quadratic_preactivation(X, teacher.W_star)
    z_star = center(A_star, population_center(teacher.W_star), centering) + xi
    sigma = activation(params.activation)
    gram = X @ X.transpose(-1, -2) / teacher.D
    return SequenceSet(X=X, xi=xi, gram=gram, z_star=z_star, target=sigma(z_star))


def finetune_set(
    teacher: Teacher,
    params: Params,
    n: int,
    generator: torch.Generator | None,
    centering: Centering = "population",
    reuse_from: SequenceSet | None = None,
) -> SequenceSet:
    r"""n fine-tuning samples (X', y') ~ 𝒫' of eq. (6).

    With ``reuse_from`` (the paper's e = 1) the inputs X' and the noise ξ' are those of the
    first n sequences of that pre-training set; the targets use the fine-tuning teacher
    S* + w*w*ᵀ. Otherwise (e = 0) X' and ξ' are fresh draws from ``generator``.
    """
    check_centering(centering)
    if reuse_from is not None:
        if n > reuse_from.n:
            raise ValueError(f"reuse needs n <= {reuse_from.n} pre-training sequences, got n={n}")
        X, xi = reuse_from.X[:n], reuse_from.xi[:n]
    else:
        X = draw_sequences(n, teacher.D, params.T, generator)
        xi = draw_noise(n, params.T, params.Delta, generator)
    D = teacher.D
    A_ext = quadratic_preactivation(X, teacher.W_star)
    chi_star = X @ teacher.w_star / D**0.5
    outer = chi_star[:, :, None] * chi_star[:, None, :]
    c_ext = population_center(teacher.W_star)
    c_w = teacher.w_star @ teacher.w_star / D
    z_star = center(A_ext + outer, c_ext + c_w, centering) + xi
    z_star_ext = center(A_ext, c_ext, centering) + xi
    sigma = activation(params.activation)
    gram = X @ X.transpose(-1, -2) / D
    return SequenceSet(
        X=X,
        xi=xi,
        gram=gram,
        z_star=z_star,
        target=sigma(z_star),
        chi_star=chi_star,
        z_star_ext=z_star_ext,
    )
