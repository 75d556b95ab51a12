r"""One result record for every solver of the project: simulation, state evolution and
Bayes-optimal.

:func:`hdlora.simulation.simulate`, :func:`hdlora.theory.state_evolution` (and its two stages
:func:`~hdlora.theory.pretrain`, :func:`~hdlora.theory.finetune`) and
:func:`hdlora.theory.bayes_optimal` all return an :class:`Observables`, built by keyword, so
that their results overlay directly; :meth:`Observables.to_dict` gives the flat row of a tidy
table (one row per point, parameters as columns).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from hdlora.params import Params

Source = Literal["simulation", "theory", "bayes"]
SOURCES: tuple[str, ...] = ("simulation", "theory", "bayes")
#: how the fine-tuning samples were chosen: i.i.d., or by Algorithm 1 (active fine-tuning)
SELECTIONS: tuple[str, ...] = ("uniform", "active")

_NAN = math.nan

#: the observables that carry a standard error ``<name>_se``
WITH_SE: tuple[str, ...] = (
    "test_error",
    "train_error",
    "ft_test_error",
    "ft_train_error",
    "forgetting_error",
    "overlap",
    "Q",
    "M",
    "q",
    "m",
)


@dataclass(kw_only=True)
class Observables:
    r"""Errors, order parameters, conjugates and solver statistics of one point.

    Errors (per sample, eqs. (2)–(5), (84)), each with a standard error ``<name>_se``:
      ``test_error`` ℰ (eq. 4), ``train_error`` ℒ/N (Result 3), ``ft_test_error`` ℰ' (eq. 5),
      ``ft_train_error`` ℒ'/N', ``forgetting_error`` ℰ'' (eq. 84), ``overlap``
      o_w = |ŵᵀw*|/(‖ŵ‖‖w*‖).
    Order parameters (eqs. 8–9): ``Q0``, ``Q``, ``M``, ``V`` (pre-training), ``q0``, ``q``,
      ``m``, ``v`` (fine-tuning; ``m`` ≥ 0 by the w → −w symmetry); ``Q_se`` … as above.
    Conjugates (theory): ``Q_hat``, ``M_hat``, ``V_hat`` (eqs. 49–51), ``q_hat``, ``m_hat``,
      ``v_hat`` (eqs. 70–72).
    Statistics: ``converged``, ``n_iter`` (fixed-point or L-BFGS iterations, summed over the
      stages), ``residual``, ``message``; replicon values ``replicon`` (75, corrected) and
      ``ft_replicon`` (78) with their verdicts ``replicon_stable``, ``ft_replicon_stable``
      (None where not computed).
    Frozen map and selection (§4, App. E): ``beta`` the recalibration Ŵ → √β Ŵ applied before
      the fine-tuning (1 = none), ``beta_star`` β* = M/Q of the pre-training (eq. 26),
      ``Delta_eff`` Δ/2 + Q0 − 2M + Q of the frozen map the fine-tuning sees (eq. 25, with the
      recalibrated Q, M), ``rho`` the labelling ratio N'/N̄' of active fine-tuning (Algorithm 1;
      NaN for a uniform selection) and ``selection`` ("uniform" or "active").
    Metadata: ``params``, ``source``, ``D`` (simulation) or ``n_mc`` (theory), ``seed``,
      ``wall_time`` (s), and ``info`` (further diagnostics, flat scalars).

    A field that a source does not compute is NaN (e.g. ``V`` for a simulation); a failure is
    never a silent NaN: it sets ``converged=False`` and ``message``, and a warning is raised.
    """

    params: Params
    source: Source
    test_error: float = _NAN
    test_error_se: float = _NAN
    train_error: float = _NAN
    train_error_se: float = _NAN
    ft_test_error: float = _NAN
    ft_test_error_se: float = _NAN
    ft_train_error: float = _NAN
    ft_train_error_se: float = _NAN
    forgetting_error: float = _NAN
    forgetting_error_se: float = _NAN
    overlap: float = _NAN
    overlap_se: float = _NAN
    Q0: float = _NAN
    Q: float = _NAN
    Q_se: float = _NAN
    M: float = _NAN
    M_se: float = _NAN
    V: float = _NAN
    q0: float = _NAN
    q: float = _NAN
    q_se: float = _NAN
    m: float = _NAN
    m_se: float = _NAN
    v: float = _NAN
    Q_hat: float = _NAN
    M_hat: float = _NAN
    V_hat: float = _NAN
    q_hat: float = _NAN
    m_hat: float = _NAN
    v_hat: float = _NAN
    converged: bool = True
    n_iter: int = 0
    residual: float = _NAN
    message: str = ""
    replicon: float = _NAN
    replicon_stable: bool | None = None
    ft_replicon: float = _NAN
    ft_replicon_stable: bool | None = None
    beta: float = 1.0
    beta_star: float = _NAN
    Delta_eff: float = _NAN
    rho: float = _NAN
    selection: str = "uniform"
    D: int | None = None
    n_mc: int | None = None
    seed: int | None = None
    wall_time: float = _NAN
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got source={self.source!r}")
        if not isinstance(self.params, Params):
            raise ValueError(f"params must be a hdlora.Params, got {type(self.params).__name__}")
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"selection must be one of {SELECTIONS}, got selection={self.selection!r}"
            )

    @property
    def stable(self) -> bool:
        """True unless a computed replicon verdict says unstable."""
        return self.replicon_stable is not False and self.ft_replicon_stable is not False

    def replace(self, **changes) -> Observables:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Flat row: parameters, observables, metadata, then ``info`` keys prefixed ``info_``."""
        row = dict(self.params.to_dict())
        for f in dataclasses.fields(self):
            if f.name in ("params", "info"):
                continue
            row[f.name] = getattr(self, f.name)
        for key, value in self.info.items():
            row[f"info_{key}"] = value
        return row

    def __repr__(self) -> str:
        p = self.params
        head = (
            f"T={p.T} κ0={p.kappa0:g} κ={p.kappa:g} Δ={p.Delta:g} α={p.alpha:g} "
            f"α'={p.alpha_ft:g} λ={p.lam:g} λ'={p.lam_ft:g} {p.activation} e={p.e}"
        )
        size = f"D={self.D}" if self.D is not None else f"n_mc={self.n_mc}"
        parts = []
        for name, label in (
            ("test_error", "E"),
            ("train_error", "L"),
            ("ft_test_error", "E'"),
            ("forgetting_error", "E''"),
            ("overlap", "o_w"),
            ("Q", "Q"),
            ("M", "M"),
            ("q", "q"),
            ("m", "m"),
        ):
            value = getattr(self, name)
            if math.isnan(value):
                continue
            se = getattr(self, f"{name}_se")
            parts.append(f"{label}={value:.4g}" + ("" if math.isnan(se) else f"±{se:.1g}"))
        status = "converged" if self.converged else f"NOT converged ({self.message})"
        if not self.stable:
            status += ", replicon >= 1"
        return f"Observables[{self.source}, {size}]({head} | {' '.join(parts)} | {status})"
