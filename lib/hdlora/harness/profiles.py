"""Run profiles of the notebooks: ``smoke`` (CI, seconds), ``quick`` (a 2-core CPU, the default
of ``make figures``), ``paper`` (the paper's sizes; a GPU if present)."""

from __future__ import annotations

from typing import TypeVar

PROFILES = ("smoke", "quick", "paper")

T = TypeVar("T")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got profile={profile!r}")
    return profile


def choose(profile: str, *, smoke: T, quick: T, paper: T) -> T:
    """The value of the setting for ``profile``."""
    return {"smoke": smoke, "quick": quick, "paper": paper}[check_profile(profile)]


#: the sizes several notebooks share, per profile (one table: a notebook names the setting, it
#: does not repeat the values). A notebook's own sizes stay in its ``run.choose`` calls.
SIZES: dict[str, dict] = {
    # Monte-Carlo samples of a figure's state evolutions (Figs. 1-6)
    "n_mc": dict(smoke=1024, quick=8192, paper=32768),
    # ... of the validation tables of §3 (notebooks 02, 03) and their seeds
    "n_mc_validation": dict(smoke=2048, quick=16384, paper=65536),
    "mc_seeds_validation": dict(smoke=[0], quick=[0], paper=[0, 1]),
    # dimensions of the validation simulations of §3
    "Ds_validation": dict(smoke=[40, 80], quick=[100, 200], paper=[100, 200, 400]),
    # runs per simulated point of Figs. 1-6 (App. D: error bars are the sd across runs)
    "sim_seeds": dict(smoke=[0, 1], quick=[0, 1, 2, 3], paper=list(range(5))),
    # λ grids of Figs. 1 and 3, Δ_eff grids of Figs. 2 and 5
    "n_lam": dict(smoke=3, quick=20, paper=32),
    "lam_range": dict(smoke=[0.03, 3.0], quick=[0.003, 3.0], paper=[0.001, 3.0]),
    "n_delta": dict(smoke=3, quick=20, paper=30),
    # Monte-Carlo samples of the Bayes-optimal benchmark (Figs. 1, 6)
    "bo_n_mc": dict(smoke=20_000, quick=200_000, paper=1_000_000),
}


#: the solvers whose jobs want a GPU, per profile: the simulations at the paper's sizes (a loss
#: and gradient of N T D P ≈ 10^11 multiply-adds at D = 800). A job runs on its worker's GPU when
#: it has one whatever this says; the cost plan prices these jobs on a GPU.
GPU_SOLVERS: dict[str, tuple[str, ...]] = {
    "smoke": (),
    "quick": (),
    "paper": ("simulate", "simulate_finetune", "simulate_paired", "recalibration_scan"),
}


def size(profile: str, name: str):
    """The shared setting ``name`` of :data:`SIZES` for ``profile`` (a copy: lists are not
    shared between runs)."""
    if name not in SIZES:
        raise ValueError(f"name must be one of {sorted(SIZES)}, got name={name!r}")
    value = SIZES[name][check_profile(profile)]
    return list(value) if isinstance(value, list) else value
