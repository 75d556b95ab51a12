"""Finite-D simulation of the two-stage model, the ground truth of the project (App. D).

Rooms: :mod:`~hdlora.simulation.experiment` (:class:`Experiment`: one data draw, both training
stages), :mod:`~hdlora.simulation.pipeline` (:func:`simulate`, with the recalibration β and
active fine-tuning ρ, and :func:`recalibration_scan`, App. E: one pre-training fine-tuned at
several β and λ'), :mod:`~hdlora.simulation.finetune_only` (:class:`FinetuneExperiment` and
:func:`simulate_finetune`: fine-tuning alone on a frozen map given by Q0, Q, M, the frozen
fields drawn from the law 𝒬 of Result 1), :mod:`~hdlora.simulation.starts` (several starts per
stage, the one fine-tuning stage of both simulators), :mod:`~hdlora.simulation.measure` (order
parameters, errors, measured noise), :mod:`~hdlora.simulation.active` (Algorithm 1),
:mod:`~hdlora.simulation.paired` (:func:`~hdlora.simulation.paired.simulate_paired`: uniform and
Algorithm 1's selection of one pool, the paired gain of Fig. 4) and
:mod:`~hdlora.simulation.lbfgs` (the L-BFGS minimiser)."""

from hdlora.simulation.experiment import Experiment
from hdlora.simulation.finetune_only import FinetuneExperiment, simulate_finetune
from hdlora.simulation.pipeline import recalibration_scan, simulate
from hdlora.simulation.starts import DEFAULT_N_INIT, OVERLAP_DISAGREE

__all__ = [
    "DEFAULT_N_INIT",
    "OVERLAP_DISAGREE",
    "Experiment",
    "FinetuneExperiment",
    "recalibration_scan",
    "simulate",
    "simulate_finetune",
]
