"""Benchmark of the full prediction (issue: fine-tuning theory).

Pre-training + fine-tuning state evolution, softmax, T = 3, κ0 = κ = 1, Δ = 0.5, α = 0.1,
α' = 3, λ = 0.1, λ' = 0.5, n_mc = 30000, tolerance 1e-6: target ≤ 10 s on a 2-core CPU. In the
same run the per-sample way — one ``scipy.optimize.minimize`` per Monte-Carlo sample for each
proximal (BFGS with the same analytic gradients) — is timed on a subset at the fixed point and
extrapolated to n_mc, and the ratios are printed.

Run: .venv/bin/python bench/bench_state_evolution.py
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import minimize

from hdlora import Params
from hdlora.activations import softmax_rows
from hdlora.prox_finetune import loss_terms
from hdlora.theory import finetune, pretrain
from hdlora.theory.finetune import FinetuneSamples, side_fields

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

    # per-sample scipy fine-tuning proximals at the fixed point
    T = p.T
    samples = FinetuneSamples.draw(n_mc, T, 0)
    zs, z, _ = side_fields(pre, p.Delta, T, samples.g, samples.zeta_pre, p.activation, False)
    cs = samples.chi_star
    ct = ft.m * cs + math.sqrt(ft.q - ft.m**2) * samples.zeta
    Y = softmax_rows(zs + cs[:, :, None] * cs[:, None, :] - np.eye(T))
    Zb = z - ft.q * np.eye(T)

    def F(c, i):
        f, g, _, _ = loss_terms(c[None], Zb[i : i + 1], Y[i : i + 1], "softmax", False)
        d = c - ct[i]
        return f[0] + d @ d / (2 * ft.v), g[0] + d / ft.v

    t0 = time.perf_counter()
    for i in range(N_SUBSET):
        for start in (ct[i], -ct[i]):  # the same two starts as the batched solver
            minimize(F, start, args=(i,), jac=True, method="BFGS", options={"gtol": 1e-10})
    t_scipy_ft = (time.perf_counter() - t0) / N_SUBSET * n_mc
    per_iter_ft = t_ft / max(ft.n_iter, 1)
    print(
        f"per-sample scipy fine-tuning proximals: {t_scipy_ft:.1f} s per iteration "
        f"(timed on {N_SUBSET} samples); batched: {per_iter_ft:.3f} s per iteration"
    )
    print(f"speed-up per fine-tuning iteration: {t_scipy_ft / per_iter_ft:.0f}x")
    t_pre_scipy = 45.0  # measured by bench_pretrain_theory.py on this machine (s per iteration)
    t_paper = (t_pre_scipy + t_scipy_ft) * PAPER_ITERATIONS
    print(
        f"whole prediction vs per-sample x {PAPER_ITERATIONS} iterations of each stage "
        f"({t_paper / 3600:.1f} h, pre-training per-iteration cost from bench_pretrain_theory): "
        f"{t_paper / total:.0f}x"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
