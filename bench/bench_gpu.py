"""Issue 24 on a GPU: one paper-size Fig. 2 point, timed, against the theory.

The point is Fig. 2's caption (T = 3, softmax, λ' = 0.5, M = 1, Q0 = Q) in its left panel
(Δ = 0) at Δ_eff = 1 and α' = 3, simulated as the Fig. 2 notebook simulates it
(:func:`hdlora.simulation.simulate_finetune`, the default starts and the teacher start) at the
paper profile's dimensions D = 2500, 5000 and 10⁴, seeds in turn (the paper: five runs) while
the time budget lasts. Two steps:

* ``measure`` (on the machine with the GPU): runs the simulations on CUDA in float64, one
  record per (D, seed), and writes them with the machine's description to ``--out``
  (``gpu_fig2.json``) after every run, so a run stopped at its limit keeps what it did;
* ``report`` (here, on the CPU): reads those records, evaluates the state evolution at the point
  (:func:`hdlora.theory.sweep`, the paper profile's n_mc = 32768, two seeds), extrapolates the
  simulations in 1/D seed by seed, compares them with the theory and with the cost plan's
  predictions (:class:`hdlora.harness.costs.CostModel`: CPU, and GPU with its assumptions), and
  writes ``bench/results/gpu_fig2.json``.

Run: ``python bench/bench_gpu.py measure --out DIR --budget 400`` on the GPU machine, then
``.venv/bin/python bench/bench_gpu.py report --records DIR/gpu_fig2.json`` here.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DELTA_EFF, ALPHA_FT, DELTA = 1.0, 3.0, 0.0
SIZES = (10_000, 2500, 5000)  # the paper's size first: it is the must-show
SEEDS = range(5)
MARKERS = ("<!-- gpu -->", "<!-- /gpu -->")
WARM_UP_D = 200


def point():
    from hdlora import EffectivePretraining, Params

    params = Params(T=3, lam_ft=0.5, activation="softmax", Delta=DELTA, alpha_ft=ALPHA_FT)
    return params, EffectivePretraining.on_diagonal(DELTA_EFF, DELTA, 1.0)


def one_run(D: int, seed: int, device: str) -> dict:
    """One simulation of the point, its record and the seconds it took (CUDA synchronised)."""
    import torch

    from hdlora.simulation import simulate_finetune

    params, effective = point()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = simulate_finetune(
            params, effective, D, seed, teacher_start=True, device=device, progress=False
        ).to_dict()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    keep = (
        "D",
        "seed",
        "alpha_ft",
        "Delta_eff",
        "ft_test_error",
        "ft_test_error_se",
        "overlap",
        "q",
        "m",
        "ft_train_error",
        "wall_time",
        "info_finetune_n_evals",
        "info_device",
    )
    out = {k: rec.get(k) for k in keep}
    out |= dict(seconds=time.perf_counter() - t0, warnings=[str(w.message)[:200] for w in caught])
    if device.startswith("cuda"):
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out


def measure(out: Path, budget: float, sizes=SIZES, seeds=SEEDS, warm_up_D=WARM_UP_D) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = dict(
        device=device,
        torch=torch.__version__,
        python=platform.python_version(),
        gpu=torch.cuda.get_device_name() if device == "cuda" else None,
        cpu_threads=torch.get_num_threads(),
    )
    start = time.perf_counter()
    warm = one_run(warm_up_D, 0, device)  # fails early, and pays the CUDA start-up
    result = dict(machine=machine, warm_up=warm, runs=[])
    print(machine, "\nwarm-up", warm, flush=True)
    last = {}
    for seed in seeds:
        for D in sizes:
            elapsed = time.perf_counter() - start
            if elapsed + 1.3 * last.get(D, 0.0) > budget:
                print(f"budget: D = {D}, seed {seed} not run ({elapsed:.0f} s)", flush=True)
                continue
            run = one_run(D, seed, device)
            last[D] = run["seconds"]
            result["runs"].append(run)
            print(run, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_fig2.json").write_text(json.dumps(result, indent=1))


def theory_at_point(n_mc: int = 32768, seeds=(0, 1)):
    """The state evolution at the point, one row per Monte-Carlo seed."""
    import pandas as pd

    from hdlora.theory import sweep

    params, effective = point()
    return pd.concat(
        [sweep(params, pretraining=[effective], n_mc=n_mc, seed=s) for s in seeds],
        ignore_index=True,
    )


def job(D: int) -> dict:
    return dict(solver="simulate_finetune", D=D, **point()[0].to_dict())


def gpu_fit(runs) -> dict:
    """:data:`hdlora.harness.costs.GPU_MODEL`'s normals per second and seconds per evaluation,
    fitted (non-negative least squares on the relative error) to the measured seconds."""
    from scipy.optimize import nnls

    from hdlora.harness.costs import sizes

    A = np.array([[sizes(job(r["D"]))["normals"], r["info_finetune_n_evals"]] for r in runs])
    t = np.array([r["seconds"] for r in runs])
    c, _ = nnls(A / t[:, None], np.ones(len(t)))
    ratio = A @ c / t
    return dict(
        normals_per_second=1 / c[0],
        seconds_per_evaluation=c[1],
        ratio_min=ratio.min(),
        ratio_max=ratio.max(),
    )


def cost_predictions(model, D: int, n_evals: float) -> dict:
    """The cost plan's seconds for one run at D by ``model`` (a fitted
    :class:`~hdlora.harness.costs.CostModel`): CPU (the committed tables' machine) and GPU
    (:data:`~hdlora.harness.costs.GPU_MODEL`), with the model's own number of evaluations, and
    on the GPU also with the number measured."""
    from hdlora.harness.costs import gpu_seconds, sizes

    return dict(
        evals_ft_predicted=model.evaluations(job(D), "ft"),
        cpu_seconds_predicted=model.seconds(job(D)),
        gpu_seconds_predicted=model.seconds(job(D), gpu=True),
        gpu_seconds_at_measured_evals=gpu_seconds(sizes(job(D)), n_evals, 0.0),
    )


def report(records: Path) -> None:
    import pandas as pd

    from hdlora.harness.agreement import AGREEMENT_COLUMNS, agreement_table
    from hdlora.harness.costs import CostModel
    from hdlora.harness.io import replace_between, write_bytes

    got = json.loads(records.read_text())
    runs = pd.DataFrame(got["runs"]).assign(alpha_ft=ALPHA_FT, Delta_eff=DELTA_EFF)
    theory = theory_at_point().assign(alpha_ft=ALPHA_FT, Delta_eff=DELTA_EFF)
    observables = ["ft_test_error", "overlap", "q", "m"]
    table = agreement_table(runs, theory, ["alpha_ft", "Delta_eff"], observables)
    per_D = runs.groupby("D").agg(
        runs=("seed", "size"),
        seconds=("seconds", "mean"),
        evals=("info_finetune_n_evals", "mean"),
        ft_test_error=("ft_test_error", "mean"),
        ft_test_error_sd=("ft_test_error", "std"),
    )
    model = CostModel.fit(ROOT / "data")
    costs = pd.DataFrame(
        [
            cost_predictions(model, int(D), float(r.evals)) | {"D": int(D)}
            for D, r in per_D.iterrows()
        ]  # fmt: skip
    ).set_index("D")
    per_D = per_D.join(costs)
    fit = gpu_fit(got["runs"])
    print(got["machine"], "\nGPU model fitted:", fit)
    print(per_D.to_string(float_format=lambda x: f"{x:.4g}"))
    per_size = [c for c in table if c.startswith("sim_D")]
    cols = ["observable", *per_size, *AGREEMENT_COLUMNS[1:-1]]  # no replicon here
    print(table[cols].to_string(float_format=lambda x: f"{x:.4g}"))
    out = dict(
        machine=got["machine"],
        gpu_model=fit,
        point=point()[0].to_dict() | dict(Delta_eff=DELTA_EFF),
        per_D=per_D.reset_index().to_dict(orient="records"),
        agreement=table[cols].to_dict(orient="records"),
        date=got["date"],
    )
    write_bytes(
        ROOT / "bench/results/gpu_fig2.json", json.dumps(out, indent=1, default=float).encode()
    )
    readme = ROOT / "README.md"
    text = replace_between(readme.read_text(), *MARKERS, readme_sentence(out, runs))
    write_bytes(readme, text.encode())


def readme_sentence(out: dict, runs) -> str:
    """The README's account of the GPU runs, from the report."""
    D = max(SIZES)
    top = runs[runs["D"] == D]
    row = {r["observable"]: r for r in out["agreement"]}
    e = row["ft_test_error"]
    per_D = {int(r["D"]): r for r in out["per_D"]}
    ratios = ", ".join(f"{r['gpu_seconds_predicted'] / r['seconds']:.2f}" for r in per_D.values())
    zs = ", ".join(f"{k} {row[k]['z']:+.2f}" for k in ("overlap", "q", "m"))
    return (
        f"On an {out['machine']['gpu']} (torch {out['machine']['torch']}, {out['date']}; "
        "`bench/bench_gpu.py`), the Fig. 2 point Δ = 0, Δ_eff = 1, α' = 3 at the paper's "
        f"D = {D}: {len(top)} runs of {top['seconds'].mean():.0f} s each "
        f"({top['wall_time'].mean():.0f} s to draw the data and fit, the rest for the "
        f"{10 * D} test sequences, drawn on the host CPU; {top['peak_gpu_gib'].max():.1f} GiB "
        f"of GPU memory), ℰ' = {top['ft_test_error'].mean():.4f} ± "
        f"{top['ft_test_error'].std() / len(top) ** 0.5:.4f}; extrapolated in 1/D from "
        f"D = {', '.join(str(d) for d in per_D)} ({len(runs)} runs), ℰ' = {e['sim_inf']:.4f} ± "
        f"{e['sim_inf_se']:.4f} against the theory's {e['theory']:.4f} ± {e['theory_se']:.4f} "
        f"(z = {e['z']:+.2f}; {zs}). The plan's GPU model, fitted to these runs "
        f"({out['gpu_model']['normals_per_second']:.3g} normal draws per second, "
        f"{1e3 * out['gpu_model']['seconds_per_evaluation']:.1f} ms per evaluation), predicts "
        f"{ratios} times the measured seconds at these D."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=("measure", "report"))
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--budget", type=float, default=400.0, help="seconds of simulations")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds first-seed, ...")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--records", type=Path, default=ROOT / "bench/results/gpu_fig2_runs.json")
    a = ap.parse_args()
    if a.step == "measure":
        measure(
            a.out,
            a.budget,
            a.sizes,
            range(a.first_seed, a.first_seed + a.seeds),
            min(WARM_UP_D, min(a.sizes)),
        )
    else:
        report(a.records)


if __name__ == "__main__":
    main()
