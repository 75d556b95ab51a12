"""Finite-D simulation of the two-stage model, the ground truth of the project (App. D):
:class:`Experiment` (one data draw, both training stages) and :func:`simulate` (the pipeline,
with the recalibration β and active fine-tuning ρ), :func:`recalibration_scan` (App. E: one
pre-training, fine-tuned at several β and λ'), :class:`FinetuneExperiment` and
:func:`simulate_finetune` (fine-tuning alone on a frozen map given by Q0, Q, M, with the frozen
fields drawn from the law 𝒬 of Result 1), with the L-BFGS minimiser of
:mod:`hdlora.simulation.lbfgs`."""

from hdlora.simulation.experiment import (
    DEFAULT_N_INIT,
    OVERLAP_DISAGREE,
    Experiment,
    recalibration_scan,
    simulate,
)
from hdlora.simulation.finetune_only import FinetuneExperiment, simulate_finetune

__all__ = [
    "DEFAULT_N_INIT",
    "OVERLAP_DISAGREE",
    "Experiment",
    "FinetuneExperiment",
    "recalibration_scan",
    "simulate",
    "simulate_finetune",
]
