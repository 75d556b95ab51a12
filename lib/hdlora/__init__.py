"""hdlora: the theory of LoRA fine-tuning in a solvable attention model (arXiv 2606.05899).

Packages, by what they model:

* :mod:`hdlora.model`: σ, the teacher and data of eq. (6), the attention and objectives (1)–(3);
* :mod:`hdlora.simulation`: finite-D experiments (App. D), :func:`~hdlora.simulation.simulate`;
* :mod:`hdlora.theory`: state evolutions, proximals, spectral functions, replicons, effective
  noises, Bayes-optimal (Results 1–6, Apps. A–C), :func:`~hdlora.theory.state_evolution`;
* :mod:`hdlora.harness`: run profiles, output folders and atomic writes, cached tables and the
  simulation-versus-theory agreement check.

The problem record :class:`Params` and the one result record :class:`Observables` are shared by
all; :mod:`hdlora.diagnostics` holds the warning categories and :mod:`hdlora.progress` the
progress bars (the core's iterative solvers report through it, so it lives outside the harness).
"""

from hdlora.observables import Observables
from hdlora.params import EffectivePretraining, Params

__all__ = ["Params", "EffectivePretraining", "Observables"]
__version__ = "0.2.0"
