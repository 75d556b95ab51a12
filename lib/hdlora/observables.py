"""One record for every prediction of the project: simulation, state evolution, Bayes-optimal.

The simulator (:mod:`hdlora.simulate`), the state evolution and the Bayes-optimal solvers all
return an :class:`Observables`, so that their results overlay directly; ``to_dict()`` gives the
flat row of a tidy table (one row per point, parameters as columns).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from hdlora.params import Params

Source = Literal["simulation", "theory", "bayes"]
SOURCES: tuple[str, ...] = ("simulation", "theory", "bayes")

_NAN = math.nan


@dataclass
class Observables:
    r"""Errors and order parameters of the trained (or Bayes-optimal) attention.

    Errors (all per sample, eqs. (2)–(5), (83)):
      ``test_error`` ℰ (eq. 4), ``train_error`` ℒ/N (Result 3), ``ft_test_error`` ℰ' (eq. 5),
      ``ft_train_error`` ℒ'/N', ``forgetting_error`` ℰ'' (eq. 84), ``overlap``
      o_w = |ŵᵀw*|/(‖ŵ‖‖w*‖).
    Order parameters (eqs. (8)–(9)): ``Q0``, ``Q``, ``M`` (pre-training), ``q0``, ``q``, ``m``
      (fine-tuning; ``m`` ≥ 0 by the w → −w symmetry), ``V``, ``v`` (inverse curvatures;
      theory only).
    Metadata: ``params``, ``source``, ``D`` (simulation) or ``n_mc`` (theory), ``seed``,
      ``converged``, ``wall_time`` (s), and ``info`` (solver diagnostics, flat scalars).

    A field that a source does not compute is NaN (e.g. ``V`` for a simulation); a NaN in a
    field the source does compute never stands for a failure: failures set ``converged=False``.
    """

    params: Params
    source: Source
    test_error: float = _NAN
    train_error: float = _NAN
    ft_test_error: float = _NAN
    ft_train_error: float = _NAN
    overlap: float = _NAN
    forgetting_error: float = _NAN
    Q0: float = _NAN
    Q: float = _NAN
    M: float = _NAN
    V: float = _NAN
    q0: float = _NAN
    q: float = _NAN
    m: float = _NAN
    v: float = _NAN
    D: int | None = None
    n_mc: int | None = None
    seed: int | None = None
    converged: bool = True
    wall_time: float = _NAN
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got source={self.source!r}")
        if not isinstance(self.params, Params):
            raise ValueError(f"params must be a hdlora.Params, got {type(self.params).__name__}")

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
