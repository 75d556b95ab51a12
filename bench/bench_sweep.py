"""Benchmark of a theory sweep (issue: theory precision): a λ-sweep of 15 points × 3 values of
λ', target ≤ 3 minutes on the 2-core CPU.

Point of the issue: softmax, T = 3, κ0 = κ = 1, Δ = 0.5, α = 0.1, α' = 3, n_mc = 30000;
λ ∈ logspace(−3, 0, 15), λ' ∈ {0.1, 0.5, 2}. Measured in one run:

* new: :func:`hdlora.theory.sweep` over the 45 points (one pre-training per λ, continuation of
  every fixed point from its neighbour, common random numbers, fixed-point selection);
* old: independent :func:`hdlora.theory.state_evolution` calls (each solves its pre-training and
  starts from the default point), timed on ``--old-points`` points of the grid and extrapolated
  to the 45.

Printed: wall times and their ratio, the points converged, and the precision of the curves (the
largest reported relative standard error of ℰ', o_w and q over the grid), since a faster sweep
that is noisier is not faster.

Run: .venv/bin/python bench/bench_sweep.py [--old-points 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from hdlora import Params
from hdlora.theory import state_evolution, sweep

POINT = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.01, lam_ft=0.5)
LAMS = np.logspace(-3, 0, 15)
LAM_FTS = (0.1, 0.5, 2.0)
N_MC = 30000
TARGET_S = 180.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-points", type=int, default=3)
    args = ap.parse_args()
    n_points = len(LAMS) * len(LAM_FTS)

    t0 = time.perf_counter()
    table = sweep(POINT, lam=LAMS, lam_ft=LAM_FTS, n_mc=N_MC, seed=0, progress=False)
    t_new = time.perf_counter() - t0

    picks = np.linspace(0, len(LAMS) - 1, args.old_points).round().astype(int)
    t_old_points = []
    for i in picks:
        t1 = time.perf_counter()
        state_evolution(POINT.replace(lam=float(LAMS[i])), N_MC, 0, progress=False)
        t_old_points.append(time.perf_counter() - t1)
    t_old = float(np.mean(t_old_points)) * n_points

    print(f"grid: {len(LAMS)} λ × {len(LAM_FTS)} λ' = {n_points} points, n_mc = {N_MC}")
    print(f"  old (independent state_evolution, {args.old_points} timed): {t_old:7.1f} s")
    print(f"  new (sweep: shared pre-training, continuation):          {t_new:7.1f} s")
    print(f"  speed-up old/new: {t_old / t_new:.1f}")
    print(f"  converged: {int(table['converged'].sum())} of {len(table)}")
    for col, label in (("ft_test_error", "E'"), ("overlap", "o_w"), ("q", "q")):
        rel = (table[f"{col}_se"] / table[col].abs()).replace([np.inf], np.nan)
        print(f"  largest relative se of {label:3s}: {100 * rel.max():.2f} %")
    verdict = "met" if t_new <= TARGET_S else "NOT met"
    print(f"target: sweep ≤ {TARGET_S:.0f} s: {t_new:.1f} s, {verdict}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    warnings.simplefilter("ignore")
    main()
