"""Benchmark of the pre-training state evolution (issue: pre-training theory).

One prediction, softmax, T = 3, κ0 = κ = 1, Δ = 0.5, α = 0.1, λ = 0.1, n_mc = 30000, tolerance
1e-6 on (Q, M, V): target ≤ 5 s on a 2-core CPU. In the same run, the per-sample way — one
``scipy.optimize.minimize`` per Monte-Carlo sample (BFGS, with the same analytic gradient) — is
timed on a subset of the same samples at the fixed point and extrapolated to n_mc. Printed:
the speed-up of one fixed-point iteration, and of the whole solve against (a) the per-sample way
iterated as often as App. E iterates (250 damped steps) and (b) "a few hours" (3 h, App. D).

Run: .venv/bin/python bench/bench_pretrain_theory.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from hdlora import Params
from hdlora.theory import pretrain
from hdlora.theory.laws import PretrainSamples, channel_fields

# the per-sample oracle lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import pretrain_prox_per_sample  # noqa: E402

N_SUBSET = 300
PAPER_ITERATIONS = 250
A_FEW_HOURS = 3 * 3600.0


def main() -> None:
    params = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, lam=0.1, activation="softmax")
    n_mc = 30000
    t0 = time.perf_counter()
    r = pretrain(params, n_mc=n_mc, seed=0, tol=1e-6, progress=False)
    t_solve = time.perf_counter() - t0
    per_iter = t_solve / max(r.n_iter, 1)
    print(
        f"state evolution: {t_solve:.2f} s, {r.n_iter} iterations, converged={r.converged}, "
        f"Q={r.Q:.5f} M={r.M:.5f} V={r.V:.5f}  (target <= 5 s)"
    )
    print(f"  mean time per fixed-point iteration (incl. final multi-start pass): {per_iter:.3f} s")

    # the per-sample way on a subset of the same samples, at the fixed point, from one start
    samples = PretrainSamples.draw(n_mc, params.T, 0)
    zs, zt, _ = channel_fields(r.Q, r.M, r.Q0, params.Delta, samples, params.T)
    t0 = time.perf_counter()
    pretrain_prox_per_sample(zs[:N_SUBSET], zt[:N_SUBSET], r.V, params.T, starts=("z_tilde",))
    t_scipy = (time.perf_counter() - t0) / N_SUBSET * n_mc
    print(
        f"per-sample scipy proximals: {t_scipy:.1f} s per iteration "
        f"(timed on {N_SUBSET} samples, extrapolated to {n_mc})"
    )
    print(f"speed-up per fixed-point iteration: {t_scipy / per_iter:.0f}x  (bar: >= 100x)")
    t_paper = t_scipy * PAPER_ITERATIONS
    print(
        f"speed-up of the whole solve vs per-sample x {PAPER_ITERATIONS} iterations "
        f"({t_paper / 3600:.1f} h): {t_paper / t_solve:.0f}x"
    )
    print(
        f"speed-up of the whole solve vs 'a few hours' (3 h): {A_FEW_HOURS / t_solve:.0f}x "
        "(bar: >= 1000x)"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
