"""A theory sweep of 45 points on the numpy proximals and on the compiled ones, in one run.

Point of the issues: softmax, T = 3, κ0 = κ = 1, Δ = 0.5, α = 0.1, α' = 3, n_mc = 30000;
λ ∈ logspace(−3, 0, 15), λ' ∈ {0.1, 0.5, 2}: :func:`hdlora.theory.sweep` (one pre-training
per λ, continuation of every fixed point from its neighbour, common random numbers, fixed-point
selection) with ``backend`` "numpy" and "numba" (:func:`hdlora.theory.newton.use_backend`).

Printed: wall times and their ratio, the points converged, the precision of the curves (the
largest reported relative standard error of ℰ', o_w and q: a faster sweep that is noisier is
not faster), and the largest difference between the two sweeps in units of the standard error
(the two solve the same equations on the same samples). Target (issue 23): ≤ 60 s.
``--write`` stores bench/results/sweep.json and the README's block between ``<!-- sweep -->``
markers.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sweep.py [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np

from hdlora import Params
from hdlora.harness.io import publish_record
from hdlora.theory import sweep
from hdlora.theory.newton import use_backend

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "sweep.json"
MARKERS = ("<!-- sweep -->", "<!-- /sweep -->")
POINT = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.01, lam_ft=0.5)
LAMS = np.logspace(-3, 0, 15)
LAM_FTS = (0.1, 0.5, 2.0)
N_MC = 30000
TARGET_S = 60.0
CURVES = {"E'": "ft_test_error", "o_w": "overlap", "q": "q"}


def run(backend: str) -> dict:
    with use_backend(backend):
        sweep(POINT, lam=LAMS[:1], lam_ft=LAM_FTS[:1], n_mc=2000, seed=1, progress=False)  # warm
        t0 = time.perf_counter()
        table = sweep(POINT, lam=LAMS, lam_ft=LAM_FTS, n_mc=N_MC, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    worst = {
        label: float((table[f"{col}_se"] / table[col].abs()).replace([np.inf], np.nan).max())
        for label, col in CURVES.items()
    }
    return {
        "table": table,
        "seconds": seconds,
        "converged": int(table["converged"].sum()),
        "worst_rel_se": worst,
    }


def block(record: dict) -> str:
    old, new = record["numpy"], record["numba"]
    verdict = "met" if new["seconds"] <= TARGET_S else "NOT met"
    worst = ", ".join(f"{100 * v:.2f} % on {k}" for k, v in new["worst_rel_se"].items())
    return (
        f"\nSweep (`bench/bench_sweep.py`, {record['date']}, {record['machine']}, one run): "
        f"{record['points']} points on the numpy proximals {old['seconds']:.0f} s, on the compiled "
        f"ones {new['seconds']:.0f} s ({old['seconds'] / new['seconds']:.2f}×; target ≤ "
        f"{TARGET_S:.0f} s: {verdict}); converged {old['converged']} and {new['converged']} of "
        f"{record['points']}; largest relative standard error along the curves {worst}; the two "
        f"sweeps differ by at most {record['max_z']:.2g} standard errors.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="store the result and the README block")
    args = ap.parse_args()
    out = {backend: run(backend) for backend in ("numpy", "numba")}
    a, b = out["numpy"]["table"], out["numba"]["table"]
    z = max(
        float((np.abs(a[c] - b[c]) / a[f"{c}_se"]).replace([np.inf], np.nan).max())
        for c in CURVES.values()
    )
    record = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "points": len(a),
        "max_z": z,
        **{k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in out.items()},
    }
    text = block(record)
    print(text)
    if args.write:
        publish_record(record, RESULT, ROOT / "README.md", MARKERS, text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    warnings.simplefilter("ignore")
    main()
