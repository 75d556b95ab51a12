"""Benchmark of the simulator (issue: foundation). Prints ratios measured in this one run.

One pre-training + fine-tuning simulation at D = 150, α = 0.1, α' = 3, T = 3, κ0 = κ = 1,
softmax, one initialisation: wall time and number of loss evaluations (target ≤ 20 s on a
2-core CPU). Then the cost of one pre-training loss + gradient evaluation against the bare
arithmetic it needs, the two batched matrix products U = X W (forward) and Xᵀ ∂U (backward).

Run: .venv/bin/python bench/bench_simulate.py
"""

from __future__ import annotations

import time

import torch

from hdlora import Params
from hdlora.model.losses import pretrain_objective
from hdlora.simulation import Experiment


def timeit(fn, repeat=20):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    params = Params(
        T=3,
        kappa0=1,
        kappa=1,
        Delta=0.5,
        alpha=0.1,
        alpha_ft=3,
        lam=0.1,
        lam_ft=0.5,
        activation="softmax",
    )
    D = 150
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64, D = {D}")
    t0 = time.perf_counter()
    exp = Experiment(params, D, seed=0, device="cpu")
    t_data = time.perf_counter() - t0
    fit_pre = exp.pretrain(progress=False)
    fit_ft = exp.finetune(fit_pre.x, progress=False)
    obs = exp.observables(fit_pre.x, fit_ft.x, {"pretrain": fit_pre, "finetune": fit_ft})
    total = time.perf_counter() - t0
    print(f"data generation          {t_data:7.2f} s")
    print(
        f"pre-training  L-BFGS     {fit_pre.wall_time:7.2f} s, {fit_pre.n_iter} iterations, "
        f"{fit_pre.n_evals} loss evaluations, max|grad| {fit_pre.grad_max:.1e}"
    )
    print(
        f"fine-tuning   L-BFGS     {fit_ft.wall_time:7.2f} s, {fit_ft.n_iter} iterations, "
        f"{fit_ft.n_evals} loss evaluations, max|grad| {fit_ft.grad_max:.1e}"
    )
    print(f"whole simulation         {total:7.2f} s  (target <= 20 s)  converged={obs.converged}")

    X, W = exp.train.X, fit_pre.x.clone().requires_grad_(True)
    Xf = X.reshape(-1, D)

    def loss_and_grad():
        W.grad = None
        pretrain_objective(W, exp.train, params).backward()

    dU = torch.randn(Xf.shape[0], W.shape[1], dtype=X.dtype)

    def two_products():
        U = Xf @ W.detach()
        Xf.T @ dU
        return U

    t_loss = timeit(loss_and_grad)
    t_mm = timeit(two_products)
    print(f"one loss+gradient        {1e3 * t_loss:7.2f} ms")
    print(f"XW and X^T dU products   {1e3 * t_mm:7.2f} ms")
    print(f"ratio loss+grad / two products = {t_loss / t_mm:.2f}")


if __name__ == "__main__":
    main()
