"""State evolution of the two-stage model (Results 1–5, App. A).

:func:`pretrain` solves the pre-training fixed point, eqs. (46)–(54).
"""

from hdlora.theory.pretrain import PretrainResult, pretrain

__all__ = ["pretrain", "PretrainResult"]
