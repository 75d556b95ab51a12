"""Benchmark of the simulators (issues: foundation, 11). Prints what it measures in this run.

1. Fine-tuning only (``simulate_finetune``) at D = 1000 and 2000, T = 3, α' = 3, λ' = 0.5,
   softmax, Q0 = 2, Q = 1.2, M = 1: the cost of one loss + gradient evaluation against the bare
   arithmetic it needs on the same tensors, i.e. the two products with X (χ = Xw/√D forward,
   Xᵀ∂χ backward) and the batched T×T products (E G Eᵀ); L-BFGS iterations per start; the
   spectral start; the measurement on 10 D test sequences; the whole default call.
2. The two-stage pipeline (``simulate``) at D = 300, α = 0.1 (N = 9000; a few minutes),
   α' = 3, with the default starts (pre-training 2 random, fine-tuning spectral + 3 random):
   the cost of one pre-training evaluation against its products (U = XW, Xᵀ∂U), per-stage
   time and iterations; the cost of a fine-tuning start relative to a pre-training start (the
   argument for the defaults).
3. Spurious minima of the fine-tuning: at T = 2, α' = 2, how many of 8 random starts, and the
   spectral start, reach the objective of the teacher start w = w* (or lower), for D = 60, 100,
   200 and λ' = 0.1, 0.5 (4 seeds each).
4. The cost of the default fine-tuning search (issue 27) at the same point, D = 100, 200, 400,
   4 seeds: the former default (the starts alone: ``bayes_start=False, basin_hops=0``), basin
   hopping without the Bayes start, and the default; how often each reaches the lowest
   objective of the three and of the teacher start, and the mean time of each in this run (the
   ratio default / former default: what the search costs). ``--write`` stores
   bench/results/search_cost.json and the README's block between ``<!-- search_cost -->``
   markers.

Run: .venv/bin/python bench/bench_simulate.py [--sections 1 2 3 4] [--write]   (CUDA when present)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import torch

from hdlora import Params
from hdlora.harness.io import publish_record
from hdlora.model.losses import pretrain_objective
from hdlora.params import EffectivePretraining
from hdlora.simulation import Experiment, FinetuneExperiment, simulate, simulate_finetune
from hdlora.simulation.experiment import default_device
from hdlora.simulation.starts import SAME_MINIMUM_RTOL


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeat=10):
    fn()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def finetune_only(device) -> None:
    params = Params(T=3, Delta=0.5, alpha_ft=3, lam_ft=0.5, activation="softmax")
    eff = EffectivePretraining(Q0=2.0, Q=1.2, M=1.0)
    print("\n1. fine-tuning only: T = 3, α' = 3, λ' = 0.5, softmax, (Q0, Q, M) = (2, 1.2, 1)")
    for D in (1000, 2000):
        finetune_only_at(params, eff, D, device)


def finetune_only_at(params, eff, D, device) -> None:
    t0 = time.perf_counter()
    exp = FinetuneExperiment(params, eff, D, seed=0, device=device)
    sync(device)
    t_data = time.perf_counter() - t0
    X = exp.train.X
    n, T = X.shape[0], X.shape[1]
    w = torch.randn(D, dtype=X.dtype, device=device).requires_grad_(True)

    def loss_and_grad():
        w.grad = None
        exp.objective(w).backward()

    Xf = X.reshape(-1, D)
    v = torch.randn(Xf.shape[0], dtype=X.dtype, device=device)
    E = torch.randn(n, T, T, dtype=X.dtype, device=device)
    G = exp.train.gram

    def matvecs():
        return Xf @ w.detach(), Xf.T @ v

    def small():
        return (E @ G) * E

    t_loss, t_mv, t_small = (timeit(f, device) for f in (loss_and_grad, matvecs, small))
    print(
        f"  D = {D}: N' = {n} sequences, X {X.numel() * X.element_size() / 2**20:.0f} MiB, "
        f"data {t_data:.2f} s"
    )
    print(
        f"    one loss+gradient {1e3 * t_loss:7.2f} ms; X@w and Xᵀ@v {1e3 * t_mv:7.2f} ms; "
        f"batched T×T {1e3 * t_small:6.2f} ms; ratio loss+grad / (products) = "
        f"{t_loss / (t_mv + t_small):.2f}"
    )
    for kind, kw in (
        ("spectral start", dict(n_init=1)),
        ("random start", dict(n_init=1, spectral_start=False)),
    ):
        t0 = time.perf_counter()
        fit = exp.finetune(progress=False, **kw)
        dt = time.perf_counter() - t0
        print(
            f"    {kind:15s} {dt:6.2f} s: {fit.n_iter} L-BFGS iterations, {fit.n_evals} "
            f"evaluations ({dt / max(fit.n_evals, 1) * 1e3:.1f} ms each incl. overhead)"
        )
    t0 = time.perf_counter()
    exp.observables(fit.x, fit)
    print(f"    measurement on {exp.n_test} test sequences {time.perf_counter() - t0:6.2f} s")
    t0 = time.perf_counter()
    simulate_finetune(params, eff, D, seed=0, device=device, progress=False, **STARTS_ALONE)
    print(f"    simulate_finetune, the 4 starts alone {time.perf_counter() - t0:6.2f} s")
    t0 = time.perf_counter()
    obs = simulate_finetune(params, eff, D, seed=0, device=device, progress=False)
    print(
        f"    simulate_finetune (default search) {time.perf_counter() - t0:6.2f} s, "
        f"o_w = {obs.overlap:.3f}, ℰ' = {obs.ft_test_error:.4f} ± {obs.ft_test_error_se:.4f}, "
        f"starts agree: {not obs.info['ft_starts_disagree']}"
    )


def two_stage(device) -> None:
    D = 300
    params = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.5)
    print(f"\n2. two-stage pipeline: D = {D}, α = 0.1, α' = 3, T = 3, λ = 0.1, λ' = 0.5, softmax")
    t0 = time.perf_counter()
    exp = Experiment(params, D, seed=0, device=device)
    print(
        f"  data ({exp.sizes.N} + {exp.sizes.N_ft} + 2×{exp.n_test} sequences) "
        f"{time.perf_counter() - t0:.2f} s"
    )
    X = exp.train.X
    W = torch.randn(D, exp.sizes.P, dtype=X.dtype, device=device).requires_grad_(True)

    def loss_and_grad():
        W.grad = None
        pretrain_objective(W, exp.train, params).backward()

    Xf = X.reshape(-1, D)
    dU = torch.randn(Xf.shape[0], W.shape[1], dtype=X.dtype, device=device)

    def products():
        return Xf @ W.detach(), Xf.T @ dU

    t_loss, t_mm = timeit(loss_and_grad, device, 5), timeit(products, device, 5)
    print(
        f"  pre-training: one loss+gradient {1e3 * t_loss:.1f} ms, XW and Xᵀ∂U {1e3 * t_mm:.1f} "
        f"ms, ratio {t_loss / t_mm:.2f}"
    )
    t0 = time.perf_counter()
    obs = simulate(params, D, seed=0, device=device, progress=False)
    total = time.perf_counter() - t0
    info = obs.info
    pre = [info[f"pre_start{k}_n_iter"] for k in range(info["pre_n_starts"])]
    ft = [info[f"ft_start{k}_n_iter"] for k in range(info["ft_n_starts"])]
    print(
        f"  simulate (defaults) {total:.1f} s; pre-training {info['pre_n_starts']} starts, "
        f"L-BFGS iterations {pre}, {info['pretrain_n_evals']} evaluations; fine-tuning "
        f"{info['ft_n_starts']} starts, iterations {ft}, {info['finetune_n_evals']} evaluations"
    )
    fit_pre = exp.pretrain(n_init=1, progress=False)
    fit_ft = exp.finetune(fit_pre.x, n_init=1, spectral_start=False, progress=False)
    print(
        f"  one pre-training start {fit_pre.wall_time:.1f} s, one fine-tuning start "
        f"{fit_ft.wall_time:.2f} s: a fine-tuning start costs "
        f"{100 * fit_ft.wall_time / fit_pre.wall_time:.1f} % of a pre-training start"
    )
    print(f"  {obs}")


#: the point of sections 3 and 4 (T = 2, α' = 2), at λ' = 0.1 and 0.5
MAP_EFFECTIVE = EffectivePretraining(Q0=1.5, Q=1.0, M=0.9)
#: the fine-tuning starts alone, without the default's Bayes start and moves
STARTS_ALONE = dict(bayes_start=False, basin_hops=0)
#: the searches of section 4 (keyword arguments of simulate_finetune)
SEARCHES = {
    "former default": STARTS_ALONE,
    "basin hopping": dict(bayes_start=False),
    "default": {},
    "teacher": dict(n_init=1, spectral_start=False, teacher_start=True, **STARTS_ALONE),
}
ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "search_cost.json"
MARKERS = ("<!-- search_cost -->", "<!-- /search_cost -->")


def map_points(Ds):
    """(λ', params, D) of sections 3 and 4."""
    for lam_ft in (0.1, 0.5):
        params = Params(T=2, kappa0=0.5, Delta=0.5, alpha_ft=2.0, lam_ft=lam_ft)
        for D in Ds:
            yield lam_ft, params, D


def spurious_minima(device) -> None:
    print(
        "\n3. fine-tuning starts at T = 2, α' = 2 (κ0 = 0.5, Δ = 0.5), (Q0, Q, M) = (1.5, 1, 0.9):"
    )
    print("   random starts (of 8 per seed) and spectral starts (1 per seed) reaching the teacher")
    print("   start's objective or lower; overlaps o_w of the random starts vs the teacher's")
    eff = MAP_EFFECTIVE
    for lam_ft, params, D in map_points((60, 100, 200)):
        ok_random = ok_spectral = 0
        ov_random, ov_teacher = [], []
        t0 = time.perf_counter()
        for seed in range(4):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obs = simulate_finetune(
                    params,
                    eff,
                    D,
                    seed,
                    n_init=9,
                    teacher_start=True,
                    device=device,
                    progress=False,
                    **STARTS_ALONE,
                )
            info = obs.info
            f_teacher = info["ft_start9_objective"]
            tol = SAME_MINIMUM_RTOL * abs(f_teacher)
            for k in range(9):
                reached = info[f"ft_start{k}_objective"] <= f_teacher + tol
                if info[f"ft_start{k}_kind"] == "spectral":
                    ok_spectral += reached
                else:
                    ok_random += reached
                    ov_random.append(info[f"ft_start{k}_overlap"])
            ov_teacher.append(info["ft_start9_overlap"])
        print(
            f"   λ' = {lam_ft}, D = {D:3d}: random {ok_random:2d}/32, "
            f"spectral {ok_spectral}/4; "
            f"o_w random median {sorted(ov_random)[16]:.2f} (max {max(ov_random):.2f}), "
            f"teacher {min(ov_teacher):.2f}–{max(ov_teacher):.2f}  "
            f"({time.perf_counter() - t0:.1f} s)"
        )


def _objective_and_time(run: dict, search: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = simulate_finetune(**run, **search)
    return obs.info["finetune_objective"], time.perf_counter() - t0


def search_cost_at(lam_ft, params, D, device, seeds=range(4)) -> dict:
    """One row of section 4: per search, the runs reaching the lowest objective and the mean
    time per run."""
    reached = dict.fromkeys(SEARCHES, 0)
    times = dict.fromkeys(SEARCHES, 0.0)
    for seed in seeds:
        run = dict(
            params=params, effective=MAP_EFFECTIVE, D=D, seed=seed, device=device, progress=False
        )
        found = {k: _objective_and_time(run, search) for k, search in SEARCHES.items()}
        lowest = min(f for f, _ in found.values())
        for k, (f, t) in found.items():
            reached[k] += f <= lowest + SAME_MINIMUM_RTOL * abs(lowest)
            times[k] += t / len(seeds)
    return {"lam_ft": lam_ft, "D": D, "runs": len(seeds), "reached": reached, "seconds": times}


def search_cost_block(record: dict) -> str:
    """The README's table of section 4, from its record."""
    shown = [k for k in SEARCHES if k != "teacher"]
    head = " | ".join(f"{k}: reached, s" for k in shown)
    lines = [
        f"\nThe default search against the starts alone (`bench_simulate.py --sections 4`, "
        f"{record['date']}, {record['machine']}, {record['threads']} thread(s), one run): at the "
        "point above, runs reaching the lowest objective of the searches and the teacher start, "
        "and the mean time of a run.\n",
        f"| λ' | D | {head} | default / former default |",
        "|---|---|" + "---|" * len(shown) + "---|",
    ]
    for row in record["rows"]:
        r, t = row["reached"], row["seconds"]
        cells = " | ".join(f"{r[k]}/{row['runs']}, {t[k]:.2f}" for k in shown)
        ratio = t["default"] / t["former default"]
        lines.append(f"| {row['lam_ft']:g} | {row['D']} | {cells} | {ratio:.1f}× |")
    return "\n".join(lines) + "\n"


def search_cost(device, write: bool = False) -> None:
    print("\n4. the cost of the default search: the former default (the starts alone), basin")
    print("   hopping (no Bayes start) and the default, same point as 3, 4 seeds")
    rows = [search_cost_at(*point, device) for point in map_points((100, 200, 400))]
    record = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    text = search_cost_block(record)
    print(text)
    if write:
        publish_record(record, RESULT, ROOT / "README.md", MARKERS, text)


SECTIONS = {1: finetune_only, 2: two_stage, 3: spurious_minima, 4: search_cost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sections", type=int, nargs="+", choices=sorted(SECTIONS), default=[1, 2, 3, 4]
    )
    ap.add_argument("--write", action="store_true", help="store section 4's record and block")
    args = ap.parse_args()
    device = default_device()
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, float64")
    t0 = time.perf_counter()
    for section in args.sections:
        SECTIONS[section](device, **({"write": args.write} if section == 4 else {}))
    print(f"\nbenchmark total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
