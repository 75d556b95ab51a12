"""Finite-D simulation of the two-stage model, the ground truth of the project (App. D):
:class:`Experiment` (one data draw, both training stages) and :func:`simulate` (the pipeline),
with the L-BFGS minimiser of :mod:`hdlora.simulation.lbfgs`."""

from hdlora.simulation.experiment import Experiment, simulate

__all__ = ["Experiment", "simulate"]
