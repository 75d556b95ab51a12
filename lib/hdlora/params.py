"""The problem record: the parameters of the two-stage model (paper §2, eqs. (1)–(7)).

Every solver of the project (simulation, state evolution, Bayes-optimal) takes one
:class:`Params`. Symbols are spelled out: ``kappa0`` is κ0 = P0/D, ``alpha_ft`` is
α' = N'/D, ``lam_ft`` is λ', ``reuse`` is the paper's index e.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

Activation = Literal["softmax", "linear"]
ACTIVATIONS: tuple[str, ...] = ("softmax", "linear")


@dataclass(frozen=True)
class Sizes:
    """Finite-D sizes of eq. (7): P0 = κ0 D, P = κ D, N = α D², N' = α' D (rounded)."""

    D: int
    P0: int
    P: int
    N: int
    N_ft: int


@dataclass(frozen=True)
class Params:
    r"""Parameters of the pre-training + rank-one LoRA model (paper §2).

    Attributes
    ----------
    T : int
        Number of tokens per sequence, T ≥ 2.
    kappa0 : float
        κ0 = P0/D, the rank ratio of the target W* ∈ R^{D×P0}; κ0 > 0.
    kappa : float
        κ = P/D, the rank ratio of the student W ∈ R^{D×P}; κ ≥ 1 (paper §2).
    Delta : float
        Δ ≥ 0, strength of the symmetric label noise ξ of eq. (6).
    alpha : float
        α = N/D², pre-training sample ratio; α > 0.
    alpha_ft : float
        α' = N'/D, fine-tuning sample ratio; α' > 0.
    lam : float
        λ > 0, pre-training ridge penalty λ‖W‖²_F; ``math.inf`` means no pre-training
        (Ŵ = 0, the LoRA-only baseline of App. A.7).
    lam_ft : float
        λ' > 0, LoRA ridge penalty λ'‖w‖²; ``math.inf`` means no LoRA (ŵ = 0, the frozen
        baseline of eq. (79)).
    activation : {"softmax", "linear"}
        σ: the row-wise softmax or the rescaled identity x ↦ x/T.
    reuse : bool
        The paper's e: False (e = 0) draws fresh fine-tuning sequences, True (e = 1) reuses
        N' pre-training sequences X and their noise ξ (eq. (6)).
    """

    T: int = 3
    kappa0: float = 1.0
    kappa: float = 1.0
    Delta: float = 0.5
    alpha: float = 0.1
    alpha_ft: float = 3.0
    lam: float = 0.1
    lam_ft: float = 0.5
    activation: Activation = "softmax"
    reuse: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.T, bool) or not isinstance(self.T, int | float) or self.T != int(self.T):
            raise ValueError(f"T must be an integer >= 2, got T={self.T!r}")
        object.__setattr__(self, "T", int(self.T))
        if self.T < 2:
            raise ValueError(f"T must be an integer >= 2, got T={self.T!r}")
        _check_real("kappa0", self.kappa0, "κ0 > 0", lambda x: x > 0 and math.isfinite(x))
        _check_real("kappa", self.kappa, "κ >= 1 (paper §2)", lambda x: x >= 1 and math.isfinite(x))
        _check_real("Delta", self.Delta, "Δ >= 0", lambda x: x >= 0 and math.isfinite(x))
        _check_real("alpha", self.alpha, "α > 0", lambda x: x > 0 and math.isfinite(x))
        _check_real("alpha_ft", self.alpha_ft, "α' > 0", lambda x: x > 0 and math.isfinite(x))
        _check_real("lam", self.lam, "λ > 0, or math.inf for no pre-training", lambda x: x > 0)
        _check_real("lam_ft", self.lam_ft, "λ' > 0, or math.inf for no LoRA", lambda x: x > 0)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS}, got activation={self.activation!r}"
            )
        if not isinstance(self.reuse, bool):
            raise ValueError(f"reuse must be a bool (the paper's e), got reuse={self.reuse!r}")

    @property
    def e(self) -> int:
        """The paper's index e ∈ {0, 1}."""
        return int(self.reuse)

    @property
    def Q0(self) -> float:
        """Q0 = D⁻² Tr S*² → 1 + κ0 (paper §3, below eq. (9))."""
        return 1.0 + self.kappa0

    def replace(self, **changes) -> Params:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def sizes(self, D: int) -> Sizes:
        """Integer sizes at dimension D, eq. (7); raises if one of them is < 1."""
        if isinstance(D, bool) or int(D) != D or D < 2:
            raise ValueError(f"D must be an integer >= 2, got D={D!r}")
        D = int(D)
        s = Sizes(
            D=D,
            P0=round(self.kappa0 * D),
            P=round(self.kappa * D),
            N=round(self.alpha * D * D),
            N_ft=round(self.alpha_ft * D),
        )
        for name, value, rule in (
            ("kappa0", s.P0, "P0 = κ0 D"),
            ("alpha", s.N, "N = α D²"),
            ("alpha_ft", s.N_ft, "N' = α' D"),
        ):
            if value < 1:
                raise ValueError(f"{rule} rounds to {value} at D={D}: increase D or {name}")
        if self.reuse and s.N_ft > s.N:
            raise ValueError(
                f"reuse=True needs N' <= N, but N' = α'D = {s.N_ft} > N = αD² = {s.N} at D={D}: "
                "increase D or alpha, or decrease alpha_ft"
            )
        return s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_real(name: str, value, rule: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a real number with {rule}, got {name}={value!r}")
    if math.isnan(value) or not ok(float(value)):
        raise ValueError(f"{name} must satisfy {rule}, got {name}={value!r}")


@dataclass(frozen=True)
class EffectivePretraining:
    r"""A frozen pre-training given by its order parameters (eq. 8): the fine-tuning sees the
    pre-trained map only through them (Results 2, 5).

    Figures 2, 4 and 5 fix M = 1 and vary Q0 = Q, so Q0 need not be 1 + κ0; Δ_eff =
    Δ/2 + Q0 − 2M + Q (eq. 25). V (Result 4) is only used for reused sequences (e = 1).
    Used by :func:`hdlora.theory.finetune` and :func:`hdlora.simulation.simulate_finetune`."""

    Q0: float
    Q: float
    M: float
    V: float = 0.0

    @classmethod
    def on_diagonal(cls, Delta_eff: float, Delta: float, M: float = 1.0) -> EffectivePretraining:
        """The family of Figures 2, 4, 5: M fixed and Q0 = Q, at the given Δ_eff of eq. (25):
        Q0 = Q = (Δ_eff − Δ/2 + 2M)/2, which needs Δ_eff ≥ Δ/2 (Q ≥ M, Cauchy–Schwarz)."""
        if not (math.isfinite(Delta_eff) and Delta_eff >= Delta / 2):
            raise ValueError(
                f"Delta_eff must satisfy Delta/2 <= Delta_eff < inf (M² <= Q Q0 with Q0 = Q), "
                f"got Delta_eff={Delta_eff!r} with Delta={Delta!r}"
            )
        Q = (Delta_eff - Delta / 2 + 2 * M) / 2
        return cls(Q0=Q, Q=Q, M=M)

    def delta_eff(self, Delta: float) -> float:
        """Δ_eff = Δ/2 + Q0 − 2M + Q, eq. (25): :func:`hdlora.theory.noise.delta_eff`, its one
        definition (imported here, not at the top: the theory imports this module)."""
        from hdlora.theory.noise import delta_eff

        return delta_eff(Delta, self.Q0, self.Q, self.M)

    def recalibrated(self, beta: float) -> EffectivePretraining:
        """The frozen map Ŵ → √β Ŵ: Q → β²Q, M → βM (App. C, eq. 102); exact for fresh
        sequences (e = 0). On reused sequences the training field Prox(z*, z̃) scales as a
        whole, which :func:`hdlora.theory.finetune` does with its ``beta``."""
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got beta={beta!r}")
        return EffectivePretraining(Q0=self.Q0, Q=beta * beta * self.Q, M=beta * self.M, V=self.V)

    def __post_init__(self):
        for name in ("Q0", "Q", "V"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
        if not math.isfinite(self.M) or self.M * self.M > self.Q * self.Q0 + 1e-12:
            raise ValueError(
                f"M must satisfy M² <= Q·Q0 (Cauchy–Schwarz), got M={self.M!r}, "
                f"Q={self.Q!r}, Q0={self.Q0!r}"
            )
