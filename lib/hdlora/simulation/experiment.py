r"""Finite-D simulation of the two-stage model: the ground truth of the project (App. D).

An :class:`Experiment` draws, from one seed, the teacher and the four sets of eq. (6): the N
pre-training samples, the N' fine-tuning samples (fresh for e = 0, the first N' pre-training
sequences with their noise for e = 1), and 10D fresh test samples of each task (App. D). Then

* :meth:`Experiment.pretrain` minimises eq. (2) + λ‖W‖²_F over W ∈ R^{D×P} with L-BFGS,
* :meth:`Experiment.finetune` minimises eq. (3) + λ'‖w‖² over w ∈ R^D with Ŵ frozen,
* :meth:`Experiment.observables` measures ℰ, ℒ, ℰ', ℒ', ℰ'' (eq. 84), o_w and the order
  parameters Q0, Q, M (eq. 8), q0, q, m (eq. 9).

The data do not depend on λ, λ', so one experiment serves a sweep over them; warm starts
(``W0``, ``w0``) let a sweep reuse the previous solution. Several random initialisations
keep the lowest objective (App. D). :func:`simulate` runs the whole pipeline.

λ = ∞ gives Ŵ = 0 and λ' = ∞ gives ŵ = 0 exactly (the baselines of App. A.7).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from hdlora.model.data import (
    Centering,
    SequenceSet,
    check_centering,
    draw_teacher,
    finetune_set,
    generators,
    pretrain_set,
)
from hdlora.model.losses import (
    finetune_objective,
    finetune_preactivation,
    frozen_preactivation,
    pretrain_objective,
    pretrain_preactivation,
    sample_errors,
)
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.lbfgs import FitResult, minimize

_STAGE_ID = {"pretrain": 0, "finetune": 1}


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Experiment:
    r"""The data of one finite-D realisation, and the two training stages on them.

    Parameters
    ----------
    params : the model; its λ, λ' are defaults that the stage methods can override.
    D : token dimension (P0 = κ0 D, P = κ D, N = α D², N' = α' D, rounded).
    seed : one seed for the teacher, every set and every random initialisation.
    n_test : number of fresh test sequences of each task (default 10 D, App. D).
    centering : "population" (eq. 34, what the theory describes) or "empirical" (eq. 1 read
        literally: the mean of A over the set; at test time the student keeps the centring of
        its training set, and the teacher's targets are centred over their own set).
    device, dtype : where and in what precision to compute (default CUDA if present, float64).
    """

    def __init__(
        self,
        params: Params,
        D: int,
        seed: int = 0,
        *,
        n_test: int | None = None,
        centering: Centering = "population",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        check_centering(centering)
        self.params = params
        self.sizes = params.sizes(D)
        self.D = self.sizes.D
        self.seed = int(seed)
        self.centering = centering
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        n_test = 10 * self.D if n_test is None else n_test
        if isinstance(n_test, bool) or int(n_test) != n_test or n_test < 1:
            raise ValueError(f"n_test must be an integer >= 1, got n_test={n_test!r}")
        self.n_test = int(n_test)

        g = generators(self.seed)
        teacher = draw_teacher(self.D, params, g["teacher"])
        train = pretrain_set(teacher, params, self.sizes.N, g["pretrain"], centering)
        ft = finetune_set(
            teacher,
            params,
            self.sizes.N_ft,
            g["finetune"],
            centering,
            reuse_from=train if params.reuse else None,
        )
        test = pretrain_set(teacher, params, self.n_test, g["test_pretrain"], centering)
        test_ft = finetune_set(teacher, params, self.n_test, g["test_finetune"], centering)
        conv = dict(device=self.device, dtype=self.dtype)
        self.teacher = teacher.to(**conv)
        self.train: SequenceSet = train.to(**conv)
        self.ft: SequenceSet = ft.to(**conv)
        self.test: SequenceSet = test.to(**conv)
        self.test_ft: SequenceSet = test_ft.to(**conv)

    # ------------------------------------------------------------------ initialisations
    def _random_start(self, stage: str, k: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The k-th random initialisation of a stage, i.i.d. N(0, 1), independent of call order."""
        ss = np.random.SeedSequence([self.seed, _STAGE_ID[stage], k])
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63)))
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        return x.to(self.device, self.dtype)

    def _best_of(self, stage, objective, shape, x0, n_init, gtol, max_iter, progress) -> FitResult:
        if isinstance(n_init, bool) or int(n_init) != n_init or n_init < 1:
            raise ValueError(f"n_init must be an integer >= 1, got n_init={n_init!r}")
        starts = [] if x0 is None else [x0.to(self.device, self.dtype)]
        k = 0
        while len(starts) < n_init:
            starts.append(self._random_start(stage, k, shape))
            k += 1
        best: FitResult | None = None
        fits = []
        for i, start in enumerate(starts):
            fit = minimize(
                objective,
                start,
                gtol=gtol,
                max_iter=max_iter,
                progress=progress,
                desc=f"{stage} D={self.D} init {i + 1}/{len(starts)}",
            )
            fits.append(fit)
            if best is None or fit.objective < best.objective:
                best = fit
        best.n_evals = sum(f.n_evals for f in fits)
        best.wall_time = sum(f.wall_time for f in fits)
        return best

    # ------------------------------------------------------------------ the two stages
    def pretrain(
        self,
        lam: float | None = None,
        *,
        W0: torch.Tensor | None = None,
        n_init: int = 1,
        gtol: float = 1e-6,
        max_iter: int = 20000,
        progress: bool | None = None,
    ) -> FitResult:
        """Minimise eq. (2) + λ‖W‖²_F; returns the fit (``fit.x`` is Ŵ, shape (D, P))."""
        params = self.params if lam is None else self.params.replace(lam=lam)
        shape = (self.D, self.sizes.P)
        if math.isinf(params.lam):
            W = torch.zeros(shape, device=self.device, dtype=self.dtype)
            return FitResult(W, float("nan"), 0.0, 0, 0, True, "lam = inf: W = 0", 0.0)
        train = self.train

        def objective(W):
            return pretrain_objective(W, train, params, self.centering)

        return self._best_of("pretrain", objective, shape, W0, n_init, gtol, max_iter, progress)

    def finetune(
        self,
        W_hat: torch.Tensor,
        lam_ft: float | None = None,
        *,
        w0: torch.Tensor | None = None,
        n_init: int = 1,
        gtol: float = 1e-6,
        max_iter: int = 20000,
        progress: bool | None = None,
    ) -> FitResult:
        """Minimise eq. (3) + λ'‖w‖² with Ŵ frozen; ``fit.x`` is ŵ (D,), signed so that m ≥ 0."""
        params = self.params if lam_ft is None else self.params.replace(lam_ft=lam_ft)
        if math.isinf(params.lam_ft):
            w = torch.zeros(self.D, device=self.device, dtype=self.dtype)
            return FitResult(w, float("nan"), 0.0, 0, 0, True, "lam_ft = inf: w = 0", 0.0)
        ft = self.ft
        A_frozen = frozen_preactivation(ft.X, W_hat)

        def objective(w):
            return finetune_objective(w, A_frozen, W_hat, ft, params, self.centering)

        fit = self._best_of("finetune", objective, (self.D,), w0, n_init, gtol, max_iter, progress)
        if float(fit.x @ self.teacher.w_star) < 0:  # w -> -w is an exact symmetry of eq. (3)
            fit.x = -fit.x
        return fit

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def order_parameters(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        r"""Q0, Q, M of eq. (8) and q0, q, m of eq. (9) at this D (q, m only with ŵ).

        D⁻² Tr Ŝ² = ‖ŴᵀŴ‖²_F/(P D²), D⁻² Tr ŜS* = ‖ŴᵀW*‖²_F/(√(P P0) D²),
        Q0 = ‖W*ᵀW*‖²_F/(P0 D²).
        """
        D, P = W_hat.shape
        W_star, w_star = self.teacher.W_star, self.teacher.w_star
        P0 = W_star.shape[1]
        out = {
            "Q0": float((W_star.T @ W_star).square().sum()) / (P0 * D**2),
            "Q": float((W_hat.T @ W_hat).square().sum()) / (P * D**2),
            "M": float((W_hat.T @ W_star).square().sum()) / ((P * P0) ** 0.5 * D**2),
            "q0": float(w_star @ w_star) / D,
        }
        if w_hat is not None:
            out |= {"q": float(w_hat @ w_hat) / D, "m": float(w_hat @ w_star) / D}
        return out

    @torch.no_grad()
    def errors(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        """ℰ, ℒ/N on the pre-training sets; with ŵ also ℰ', ℒ'/N' and ℰ'' (eq. 84)."""
        p, c = self.params, self.centering
        # the model's own centring: population, or the empirical mean over its training set
        ref_pre = ref_ft = None
        if c == "empirical":
            ref_pre = frozen_preactivation(self.train.X, W_hat).mean(dim=0)

        def pre(data):
            return sample_errors(pretrain_preactivation(data.X, W_hat, c, ref_pre), data, p)

        test = pre(self.test)
        out = {
            "test_error": float(test.mean()),
            "train_error": float(pre(self.train).mean()),
            "test_error_se": float(test.std() / self.n_test**0.5),
        }
        if w_hat is None:
            return out
        A_ft_train = frozen_preactivation(self.ft.X, W_hat)
        if c == "empirical":
            chi = self.ft.X @ w_hat / self.D**0.5
            ref_ft = (A_ft_train + chi[:, :, None] * chi[:, None, :]).mean(dim=0)

        def fine(data, A=None):
            A = frozen_preactivation(data.X, W_hat) if A is None else A
            z = finetune_preactivation(A, data.X, W_hat, w_hat, c, ref_ft)
            return sample_errors(z, data, p)

        test_ft = fine(self.test_ft)
        forget = fine(self.test)  # fine-tuned model on fresh pre-training samples, eq. (84)
        return out | {
            "ft_test_error": float(test_ft.mean()),
            "ft_train_error": float(fine(self.ft, A_ft_train).mean()),
            "forgetting_error": float(forget.mean()),
            "ft_test_error_se": float(test_ft.std() / self.n_test**0.5),
            "forgetting_error_se": float(forget.std() / self.n_test**0.5),
        }

    def observables(
        self,
        W_hat: torch.Tensor,
        w_hat: torch.Tensor,
        fits: dict[str, FitResult] | None = None,
        wall_time: float = math.nan,
    ) -> Observables:
        """The :class:`Observables` record (source = "simulation") of trained weights.

        ``w_hat=None`` measures the pre-training only (fine-tuning fields NaN)."""
        pre_only = w_hat is None
        op = self.order_parameters(W_hat, w_hat)
        err = self.errors(W_hat, w_hat)
        info = {"n_test": self.n_test, "centering": self.centering, "device": str(self.device)}
        converged, n_iter, messages, grads = True, 0, [], []
        for stage, fit in (fits or {}).items():
            converged = converged and fit.converged
            n_iter += fit.n_iter
            messages.append(f"{stage}: {fit.message}")
            if math.isfinite(fit.grad_max):
                grads.append(fit.grad_max)
            info[f"{stage}_objective"] = fit.objective
            info[f"{stage}_grad_max"] = fit.grad_max
            info[f"{stage}_n_iter"] = fit.n_iter
            info[f"{stage}_n_evals"] = fit.n_evals
            info[f"{stage}_converged"] = fit.converged
        q, q0 = op.get("q", math.nan), op["q0"]
        overlap = abs(op["m"]) / math.sqrt(q * q0) if q > 0 else (math.nan if pre_only else 0.0)
        return Observables(
            params=self.params,
            source="simulation",
            **err,
            overlap=overlap,
            **op,
            D=self.D,
            seed=self.seed,
            converged=converged,
            n_iter=n_iter,
            residual=max(grads) if grads else math.nan,
            message="; ".join(messages),
            wall_time=wall_time,
            info=info,
        )


def simulate(
    params: Params,
    D: int,
    seed: int = 0,
    *,
    n_init: int = 1,
    W0: torch.Tensor | None = None,
    w0: torch.Tensor | None = None,
    n_test: int | None = None,
    centering: Centering = "population",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
    finetune: bool = True,
) -> Observables:
    """Pre-train then fine-tune at dimension D and measure everything (App. D).

    Returns the :class:`Observables` (source = "simulation"). ``converged`` is False (and a
    :class:`~hdlora.diagnostics.ConvergenceWarning` is raised) if an L-BFGS stage did not reach
    ``gtol``; ``residual`` is the largest final max|∇f| of the stages. ``finetune=False`` stops
    after the pre-training: the fine-tuning fields are then NaN and no fine-tuning work is done.
    """
    t0 = time.perf_counter()
    exp = Experiment(
        params, D, seed, n_test=n_test, centering=centering, device=device, dtype=dtype
    )
    fit_pre = exp.pretrain(W0=W0, n_init=n_init, gtol=gtol, max_iter=max_iter, progress=progress)
    fits = {"pretrain": fit_pre}
    w_hat = None
    if finetune:
        fit_ft = exp.finetune(
            fit_pre.x, w0=w0, n_init=n_init, gtol=gtol, max_iter=max_iter, progress=progress
        )
        fits["finetune"] = fit_ft
        w_hat = fit_ft.x
    return exp.observables(fit_pre.x, w_hat, fits, wall_time=time.perf_counter() - t0)
