"""State evolution of the two-stage model (Results 1–5, App. A).

:func:`pretrain` solves the pre-training fixed point, eqs. (46)–(54); :func:`finetune` the
rank-one LoRA fixed point, eqs. (67)–(72); :func:`state_evolution` chains them into one
:class:`hdlora.Observables` record.
"""

from hdlora.theory.finetune import (
    EffectivePretraining,
    FinetuneResult,
    finetune,
    state_evolution,
)
from hdlora.theory.pretrain import PretrainResult, pretrain

__all__ = [
    "pretrain",
    "PretrainResult",
    "finetune",
    "FinetuneResult",
    "EffectivePretraining",
    "state_evolution",
]
