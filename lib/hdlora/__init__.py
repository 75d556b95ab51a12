"""hdlora: the theory of LoRA fine-tuning in a solvable attention model (arXiv 2606.05899).

Modules: :mod:`hdlora.params` (the problem record), :mod:`hdlora.observables` (the result
record), :mod:`hdlora.data` (teacher and data model, eq. 6), :mod:`hdlora.losses` (eqs. 1–3),
:mod:`hdlora.simulate` (finite-D simulation, App. D).
"""

import logging

from hdlora.observables import Observables
from hdlora.params import Params

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["Params", "Observables"]
__version__ = "0.1.0"
