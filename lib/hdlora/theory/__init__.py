"""The theory of the two-stage model: state evolutions (Results 1–5, App. A), effective noises
(App. C) and Bayes-optimal benchmarks (App. B).

* :func:`pretrain`: the pre-training fixed point, eqs. (46)–(54);
* :func:`finetune`: the rank-one LoRA fixed point, eqs. (67)–(72), on a pre-training record or
  an :class:`EffectivePretraining`;
* :func:`state_evolution`: both, chained, as one :class:`hdlora.Observables` record;
* :func:`bayes_optimal`: the Bayes-optimal errors and overlaps (App. B);
* :func:`sweep`: a grid of (λ, λ', α') reusing each pre-training and neighbouring solutions,
  as a tidy DataFrame.

Building blocks: :mod:`~hdlora.theory.laws` (the Gaussian laws 𝒬, ℛ and their samples),
:mod:`~hdlora.theory.spectral`, :mod:`~hdlora.theory.prox`, :mod:`~hdlora.theory.prox_finetune`,
:mod:`~hdlora.theory.newton`, :mod:`~hdlora.theory.fixed_point`,
:mod:`~hdlora.theory.replicon`, :mod:`~hdlora.theory.noise`, :mod:`~hdlora.theory.bayes`.
"""

from hdlora.theory.bayes import bayes_optimal
from hdlora.theory.finetune import EffectivePretraining, finetune
from hdlora.theory.pretrain import pretrain
from hdlora.theory.sweep import sweep
from hdlora.theory.two_stage import state_evolution

__all__ = [
    "pretrain",
    "finetune",
    "EffectivePretraining",
    "state_evolution",
    "bayes_optimal",
    "sweep",
]
