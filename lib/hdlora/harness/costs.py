r"""What a job costs, before it runs: a model fitted to the measured times of the committed tables.

A simulation is one or two L-BFGS fits, each a number :math:`E` of loss-and-gradient evaluations
(``info_pretrain_n_evals``, ``info_finetune_n_evals``: summed over the starts). Its time is
modelled as

.. math::

    t = c_0 + c_E^{\rm pre} E^{\rm pre} + c_E^{\rm ft} E^{\rm ft}
        + b^{\rm pre} E^{\rm pre} N T D P + b^{\rm ft} E^{\rm ft} N' T D + b^{\rm test} D^3,

with :math:`N = \alpha D^2`, :math:`N' = \alpha' D`, :math:`P = \kappa D` (eq. 7): per-evaluation
overheads, the multiply-adds of one pre-training evaluation (:math:`N T D P`), those of one
rank-one fine-tuning evaluation on the frozen map (:math:`N' T D`), and the test sets of
:math:`10 D` sequences. The coefficients are fitted per simulator (the pipeline
:func:`~hdlora.simulation.simulate`, the fine-tuning alone
:func:`~hdlora.simulation.simulate_finetune`) by non-negative least squares on the relative
error, over every row of the committed simulation tables. The number of evaluations of a fit at
dimension :math:`D` is modelled as :math:`\log E = a_{\rm point} + \gamma \log D`: one exponent
:math:`\gamma` per simulator and stage, an intercept per point measured (the median intercept for
a point never measured).

The committed times were measured on whatever machine computed the tables; another machine runs
at another speed. :func:`machine_speed` measures it: two simulations (D = 100) timed here
against the model's prediction, whose ratio :attr:`CostModel.speed` then multiplies every CPU
prediction (a factor per machine, like the reference run of a benchmark suite).

A theory job costs what its committed table cost (the sum of its ``wall_time``), scaled by the
ratio of Monte-Carlo samples and not by :attr:`CostModel.speed` (a fraction of a percent of the
paper profile's plan). A record's ``wall_time`` runs from the data's draw to the end of the fits;
the test measurement is not in it.

A simulation on a GPU (:data:`GPU_MODEL`, measured by ``bench/bench_gpu.py`` on an H200) spends
its time elsewhere: its data are drawn on the host CPU (one CPU generator per stream, so that a
seed gives the same numbers on every device), and at the paper's sizes this draw, test sets
included, is most of the job (a Fig. 2 point at D = 10⁴: about 80 of 109 s), the rest being the
launches of each L-BFGS evaluation's kernels. Its multiply-adds are priced at an assumed speed-up
over one CPU core, too small a share of the measured jobs to be measured.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from hdlora.simulation.measure import test_set_size

#: simulator → the family whose coefficients price it
FAMILY = {
    "simulate": "pipeline",
    "recalibration_scan": "pipeline",
    "simulate_finetune": "finetune_only",
    "simulate_paired": "finetune_only",
}
FEATURES = ("one", "evals_pre", "evals_ft", "work_pre", "work_ft", "test")
#: the point's fields that identify it in the model of the number of evaluations
POINT = ("T", "kappa0", "kappa", "Delta", "alpha", "alpha_ft", "lam", "lam_ft", "activation")
#: a simulation on a GPU: the normal draws of its data per second (on the host CPU) and the
#: seconds of one loss-and-gradient evaluation, fitted by ``bench/bench_gpu.py`` to 13 runs of a
#: Fig. 2 point at D = 2500-10⁴ on an H200 (bench/results/gpu_fig2.json); the speed-up on the
#: multiply-adds over one CPU core, float64 (H200: 67 TFLOP/s peak FP64), is assumed.
GPU_MODEL = {"normals_per_second": 3.67e7, "seconds_per_evaluation": 6.9e-3,
             "speedup_on_work": 300.0}  # fmt: skip


def sizes(job: dict) -> dict:
    """D, T, P, N, N' and the number of fine-tunings of one simulation job (a summary of
    :func:`hdlora.harness.plan.describe`, or a row of a simulation table)."""
    D, T = int(job["D"]), int(job["T"])
    solver = job.get("solver", "simulate")
    pretrains = FAMILY.get(solver) == "pipeline"
    fits = 1
    if solver == "recalibration_scan":
        fits = int(job.get("n_betas", 1)) * int(job.get("n_lam_fts", 1))
    if solver == "simulate_paired":  # both selections at every λ'
        fits = 2 * int(job.get("n_lam_fts", 1))
    if job.get("finetune") is False or job.get("finetune") == "False":
        fits = 0
    N = round(float(job["alpha"]) * D * D) if pretrains else 0
    N_ft = round(float(job["alpha_ft"]) * D)
    test_sets = (1 + pretrains) * test_set_size(job.get("n_test"), D)  # one per stage
    drawn = N + N_ft * (2 if solver == "simulate_paired" else 1) + test_sets
    return dict(
        D=D, T=T, P=round(float(job["kappa"]) * D), N=N, N_ft=N_ft, fits=fits, normals=drawn * T * D
    )


def gpu_seconds(size: dict, evals: float, work: float) -> float:
    """Seconds of one simulation on a GPU (:data:`GPU_MODEL`): ``size`` of :func:`sizes`,
    ``evals`` loss-and-gradient evaluations, ``work`` their CPU seconds of multiply-adds."""
    g = GPU_MODEL
    return (size["normals"] / g["normals_per_second"] + evals * g["seconds_per_evaluation"]
            + work / g["speedup_on_work"])  # fmt: skip


def features(size: dict, evals_pre: float, evals_ft: float) -> np.ndarray:
    """The regressors of :data:`FEATURES` for one job (``evals_ft``: per fine-tuning)."""
    D, T, P = size["D"], size["T"], size["P"]
    e_pre = evals_pre if size["N"] else 0.0
    e_ft = evals_ft * size["fits"]
    return np.array(
        [1.0, e_pre, e_ft, e_pre * size["N"] * T * D * P, e_ft * size["N_ft"] * T * D, D**3]
    )


def measured_simulations(data_dir: str | Path) -> pd.DataFrame:
    """Every row of the committed simulation tables of ``data_dir`` whose solver is a
    simulator of :data:`FAMILY` (read from its provenance record), with ``solver`` and ``table``.
    Scans of several fine-tunings per run are left out (one row is not one job)."""
    data_dir = Path(data_dir)
    frames = []
    for path in sorted((data_dir / "provenance").glob("*.json")):
        solver = str(json.loads(path.read_text())["description"].get("solver", ""))
        name = solver.split("@")[0].rsplit(".", 1)[-1]
        if name not in ("simulate", "simulate_finetune"):
            continue
        df = pd.read_csv(data_dir / f"{path.stem}.csv")
        frames.append(df.copy().assign(solver=name, table=path.stem))
    out = pd.concat(frames, ignore_index=True)
    for stage in ("pretrain", "finetune"):
        column = f"info_{stage}_n_evals"
        out[column] = out[column] if column in out else np.nan
    return out[out["wall_time"] > 0].reset_index(drop=True)


@dataclass
class CostModel:
    """Coefficients per family (:data:`FEATURES`), and per (family, stage) the exponent γ,
    the intercepts per point and their median (see the module docstring)."""

    coefficients: dict[str, list[float]] = field(default_factory=dict)
    gamma: dict[str, float] = field(default_factory=dict)
    intercepts: dict[str, dict[str, float]] = field(default_factory=dict)
    #: this machine's seconds per second of the machine that measured the committed tables
    speed: float = 1.0

    @classmethod
    def fit(cls, data_dir: str | Path) -> CostModel:
        rows = measured_simulations(data_dir)
        model = cls()
        for family, group in rows.groupby(rows["solver"].map(FAMILY)):
            X = np.array([_row_features(r) for r in group.to_dict("records")])
            t = group["wall_time"].to_numpy()
            coef, _ = nnls(X / t[:, None], np.ones(len(t)))
            model.coefficients[family] = coef.tolist()
            for stage in ("pre", "ft"):
                model._fit_evals(family, stage, group)
        return model

    def _fit_evals(self, family: str, stage: str, group: pd.DataFrame) -> None:
        column = {"pre": "info_pretrain_n_evals", "ft": "info_finetune_n_evals"}[stage]
        g = group[group[column] > 0]
        if g.empty:
            return
        points = g[list(POINT)].astype(str).agg("|".join, axis=1)
        codes, names = pd.factorize(points)
        X = np.c_[np.log(g["D"].to_numpy(float)), np.eye(len(names))[codes]]
        sol, *_ = np.linalg.lstsq(X, np.log(g[column].to_numpy(float)), rcond=None)
        key = f"{family}:{stage}"
        self.gamma[key] = float(sol[0])
        self.intercepts[key] = dict(zip(names, sol[1:].tolist(), strict=True))

    def evaluations(self, job: dict, stage: str) -> float:
        """The predicted evaluations of one fit of ``stage`` ("pre" or "ft") of ``job``."""
        key = f"{FAMILY[job.get('solver', 'simulate')]}:{stage}"
        if key not in self.gamma:
            return 0.0
        point = "|".join(str(job.get(k)) for k in POINT)
        known = self.intercepts[key]
        a = known.get(point, float(np.median(list(known.values()))))
        return float(np.exp(a + self.gamma[key] * np.log(float(job["D"]))))

    def seconds(self, job: dict, gpu: bool = False) -> float:
        """Predicted seconds of one simulation job (one core of this machine; ``gpu``: on a
        GPU, :func:`gpu_seconds`)."""
        size = sizes(job)
        x = features(size, self.evaluations(job, "pre"), self.evaluations(job, "ft"))
        c = np.array(self.coefficients[FAMILY[job.get("solver", "simulate")]])
        if gpu:
            return gpu_seconds(size, x[1] + x[2], float(x[3:5] @ c[3:5]))
        return float(x @ c) * self.speed


def _row_features(row: dict) -> np.ndarray:
    """:func:`features` of a measured row (its own numbers of evaluations)."""
    pre = row.get("info_pretrain_n_evals")
    ft = row.get("info_finetune_n_evals")
    size = sizes(row)
    size["fits"] = 0 if not (ft == ft and ft) else 1  # NaN or 0: no fine-tuning
    return features(size, pre if pre == pre else 0.0, ft if ft == ft else 0.0)


def price_table(entry: dict, model: CostModel, gpu_solvers: tuple[str, ...] = ()) -> dict:
    """One planned table (:func:`hdlora.harness.plan.read_plan`) priced: its jobs, predicted
    CPU seconds (one core each) and seconds when the jobs of ``gpu_solvers`` run on a GPU
    (:data:`hdlora.harness.profiles.GPU_SOLVERS`), its longest job, and how it was priced."""
    jobs = entry["jobs"]
    out = dict(notebook=entry["notebook"], table=entry["table"], jobs=len(jobs))
    simulations = [j for j in jobs if j.get("solver") in FAMILY]
    if simulations and len(simulations) == len(jobs):
        cpu = [model.seconds(j) for j in jobs]
        gpu = [model.seconds(j, gpu=j["solver"] in gpu_solvers) for j in jobs]
        return out | dict(cpu_seconds=sum(cpu), gpu_seconds=sum(gpu),
                          longest_job_seconds=max(cpu), priced_by="cost model")  # fmt: skip
    seconds = entry.get("stand_in_seconds")
    if not seconds:
        return out | dict(cpu_seconds=np.nan, gpu_seconds=np.nan, longest_job_seconds=np.nan,
                          priced_by="unpriced (no measured time)")  # fmt: skip
    scale, how = 1.0, "committed time"
    if entry["by_jobs"] and jobs:
        n_mc = [j["n_mc"] for j in jobs if isinstance(j.get("n_mc"), int | float)]
        if n_mc and entry.get("stand_in_n_mc"):
            scale *= float(np.mean(n_mc)) / entry["stand_in_n_mc"]
        if all("seed" in j for j in jobs) and entry["stand_in_rows"]:
            scale *= len(jobs) / entry["stand_in_rows"]
        how = "committed time, scaled"
    cpu = seconds * scale
    longest = cpu / max(len(jobs), 1)
    return out | dict(cpu_seconds=cpu, gpu_seconds=cpu, longest_job_seconds=longest,
                      priced_by=how)  # fmt: skip


def wall_seconds(priced: pd.DataFrame, workers: int, gpu: bool = False) -> float:
    """Wall time of the priced tables on ``workers`` workers (one core each, or one GPU each
    for the simulations when ``gpu``): the larger of the total shared evenly and the longest
    job (a lower bound of any schedule)."""
    column = "gpu_seconds" if gpu else "cpu_seconds"
    longest = priced["longest_job_seconds"] * priced[column] / priced["cpu_seconds"]
    return max(float(priced[column].sum()) / workers, float(longest.max()))


def machine_speed(model: CostModel, D: int = 100, seeds: tuple[int, ...] = (8, 9)) -> float:
    """Measured over predicted seconds of the pipeline simulation at Fig. 3's caption point
    (λ = 0.1, λ' = 0.5, fresh sequences) at dimension ``D`` (large enough for the arithmetic
    to dominate, as in the jobs priced), after an untimed warm-up (the first call pays one-time
    costs), averaged over ``seeds``; on this machine and its current thread settings (about
    10 s): the :attr:`CostModel.speed` of this machine. Run it on an otherwise idle machine."""
    import time
    import warnings

    from hdlora.params import Params
    from hdlora.simulation import simulate

    point = Params(T=2, kappa0=0.5, kappa=1.0, Delta=0.5, alpha=0.2, alpha_ft=3.0, lam=0.1,
                   lam_ft=0.5)  # fmt: skip
    job = dict(solver="simulate", D=D, **point.to_dict())
    unscaled = dataclasses.replace(model, speed=1.0)
    ratios = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(point, D=D // 2, seed=seeds[0], progress=False, device="cpu")  # warm-up
        for seed in seeds:
            t0 = time.perf_counter()
            simulate(point, D=D, seed=seed, progress=False, device="cpu")
            ratios.append((time.perf_counter() - t0) / unscaled.seconds(job))
    return float(np.mean(ratios))
