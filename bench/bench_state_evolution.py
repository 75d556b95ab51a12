"""Benchmark of the full prediction (issue: fine-tuning theory).

Pre-training + fine-tuning state evolution, softmax, T = 3, κ0 = κ = 1, Δ = 0.5, α = 0.1,
α' = 3, λ = 0.1, λ' = 0.5, n_mc = 30000, tolerance 1e-6: target ≤ 10 s on a 2-core CPU. In the
same run the per-sample way — one ``scipy.optimize.minimize`` per Monte-Carlo sample for each
proximal (BFGS with the same analytic gradients) — is timed on a subset at the fixed point and
extrapolated to n_mc (`tests/reference.py`), and the ratios are printed.

Run: .venv/bin/python bench/bench_state_evolution.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from hdlora import Params
from hdlora.theory import finetune, pretrain
from hdlora.theory.laws import FinetuneSamples, PretrainSamples, channel_fields, side_fields

# the per-sample oracle lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import finetune_prox_per_sample, pretrain_prox_per_sample  # noqa: E402

N_SUBSET = 300
PAPER_ITERATIONS = 250


def main() -> None:
    p = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.5)
    n_mc = 30000
    t0 = time.perf_counter()
    pre = pretrain(p, n_mc=n_mc, seed=0, tol=1e-6, progress=False)
    t_pre = time.perf_counter() - t0
    ft = finetune(p, pre, n_mc=n_mc, seed=0, tol=1e-6, progress=False)
    total = time.perf_counter() - t0
    t_ft = total - t_pre
    print(f"pre-training SE  {t_pre:6.2f} s, {pre.n_iter} iterations")
    print(
        f"fine-tuning SE   {t_ft:6.2f} s, {ft.n_iter} iterations, m={ft.m:.5f} q={ft.q:.5f} "
        f"v={ft.v:.5f}, E'={ft.ft_test_error:.5f}"
    )
    print(
        f"full prediction  {total:6.2f} s  (target <= 10 s), "
        f"converged={pre.converged and ft.converged}"
    )

    # per-sample scipy proximals of both stages at their fixed points (tests/reference.py),
    # from one start each (the batched solvers warm-start between iterations)
    T = p.T
    pre_samples = PretrainSamples.draw(n_mc, T, 0)
    zs_p, zt_p, _ = channel_fields(pre.Q, pre.M, pre.Q0, p.Delta, pre_samples, T)
    t0 = time.perf_counter()
    pretrain_prox_per_sample(zs_p[:N_SUBSET], zt_p[:N_SUBSET], pre.V, T, starts=("z_tilde",))
    t_scipy_pre = (time.perf_counter() - t0) / N_SUBSET * n_mc

    samples = FinetuneSamples.draw(n_mc, T, 0)
    zs, z, _ = side_fields(pre, p.Delta, T, samples.g, samples.zeta_pre, p.activation, False)
    cs = samples.chi_star[:N_SUBSET]
    ct = ft.m * cs + math.sqrt(ft.q - ft.m**2) * samples.zeta[:N_SUBSET]
    t0 = time.perf_counter()
    finetune_prox_per_sample(cs, ct, zs[:N_SUBSET], z[:N_SUBSET], ft.q, ft.v, starts=1)
    t_scipy_ft = (time.perf_counter() - t0) / N_SUBSET * n_mc
    per_iter_pre = t_pre / max(pre.n_iter, 1)
    per_iter_ft = t_ft / max(ft.n_iter, 1)
    print(
        f"per-sample scipy proximals (timed on {N_SUBSET} samples, extrapolated to {n_mc}): "
        f"pre-training {t_scipy_pre:.1f} s, fine-tuning {t_scipy_ft:.1f} s per iteration"
    )
    print(
        f"speed-up per iteration: pre-training {t_scipy_pre / per_iter_pre:.0f}x, "
        f"fine-tuning {t_scipy_ft / per_iter_ft:.0f}x"
    )
    t_paper = (t_scipy_pre + t_scipy_ft) * PAPER_ITERATIONS
    print(
        f"whole prediction vs per-sample x {PAPER_ITERATIONS} iterations of each stage "
        f"({t_paper / 3600:.1f} h): {t_paper / total:.0f}x"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
