r"""One finite-D realisation of the two-stage model and its two training stages (App. D).

An :class:`Experiment` draws, from one seed, the teacher and the four sets of eq. (6): the N
pre-training samples, the N' fine-tuning samples (fresh for e = 0, the first N' pre-training
sequences with their noise for e = 1), and 10D fresh test samples of each task (App. D). Then

* :meth:`Experiment.pretrain` minimises eq. (2) + λ‖W‖²_F over W ∈ R^{D×P} with L-BFGS,
* :meth:`Experiment.finetune` minimises eq. (3) + λ'‖w‖² over w ∈ R^D with Ŵ frozen,
* :meth:`Experiment.select_active` replaces the fine-tuning set by Algorithm 1's
  (:mod:`hdlora.simulation.active`),
* :meth:`Experiment.observables` measures ℰ, ℒ, ℰ', ℒ', ℰ'' (eq. 84), o_w and the order
  parameters Q0, Q, M (eq. 8), q0, q, m (eq. 9) (:mod:`hdlora.simulation.measure`).

Each stage runs several starts and keeps the lowest objective (:mod:`hdlora.simulation.starts`,
where the defaults and the teacher start are explained). The data do not depend on λ, λ', so
one experiment serves a sweep over them; warm starts (``W0``, ``w0``) let a sweep reuse the
previous solution. The pipelines (:func:`~hdlora.simulation.pipeline.simulate`,
:func:`~hdlora.simulation.pipeline.recalibration_scan`) are in :mod:`hdlora.simulation.pipeline`.

λ = ∞ gives Ŵ = 0 and λ' = ∞ gives ŵ = 0 exactly (the baselines of App. A.7).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hdlora.model.data import (
    Centering,
    SequenceSet,
    TeacherPrior,
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
)
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.active import select_active
from hdlora.simulation.lbfgs import FitResult
from hdlora.simulation.measure import delta_eff_hat, errors, order_parameters, test_set_size
from hdlora.simulation.search import finetune_stage
from hdlora.simulation.starts import (
    STAGE_ID,
    assemble_starts,
    best_of_starts,
    check_n_init,
    fits_record,
    seeded_normal,
)
from hdlora.theory import noise


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
    teacher : "sphere" (default: the i.i.d. draw of eq. 6 rescaled to the norms of the D → ∞
        limit the theory describes, q0 = 1, Q0 = 1 + κ0) or "gaussian" (eq. 6 as it stands):
        :func:`~hdlora.model.data.draw_teacher`.
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
        teacher: TeacherPrior = "sphere",
        centering: Centering = "population",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        check_centering(centering)
        self.teacher_prior = teacher
        self.params = params
        self.sizes = params.sizes(D)
        self.D = self.sizes.D
        self.seed = int(seed)
        self.centering = centering
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        self.n_test = test_set_size(n_test, self.D)
        #: how the fine-tuning set was chosen (:meth:`select_active` changes these)
        self.rho: float | None = None
        self.selection = "uniform"
        self.selection_info: dict = {}

        g = generators(self.seed)
        teacher = draw_teacher(self.D, params, g["teacher"], self.teacher_prior)
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
        return seeded_normal([self.seed, STAGE_ID[stage], k], shape, self.device, self.dtype)

    def teacher_pretrain_start(self, lam: float | None = None) -> torch.Tensor:
        r"""The teacher start of the pre-training: W = c (P/P0)^{1/4} [W*, 0] (W*'s columns
        padded with zeros, or truncated, to P), so that Ŝ = c² S* when P ≥ P0; c is the best of
        a scan c ∈ {0.2, 0.4, …, 1.6} of the objective (2) + λ‖W‖²_F (one forward pass each)."""
        params = self.params if lam is None else self.params.replace(lam=lam)
        W_star = self.teacher.W_star
        P, P0 = self.sizes.P, W_star.shape[1]
        base = torch.zeros(self.D, P, device=self.device, dtype=self.dtype)
        k = min(P, P0)
        base[:, :k] = W_star[:, :k] * (P / P0) ** 0.25
        best_c, best_f = 1.0, math.inf
        with torch.no_grad():
            for c in 0.2 * np.arange(1, 9):
                f = float(pretrain_objective(c * base, self.train, params, self.centering))
                if f < best_f:
                    best_c, best_f = float(c), f
        return best_c * base

    def _starts(self, stage, shape, x0, n_init, teacher_start, teacher, spectral=None):
        return assemble_starts(
            stage,
            x0,
            n_init,
            lambda k: self._random_start(stage, k, shape),
            teacher if teacher_start else None,
            spectral,
            self.device,
            self.dtype,
        )

    # ------------------------------------------------------------------ the two stages
    def pretrain(
        self,
        lam: float | None = None,
        *,
        W0: torch.Tensor | None = None,
        n_init: int | None = None,
        teacher_start: bool = False,
        gtol: float = 1e-6,
        max_iter: int = 20000,
        progress: bool | None = None,
    ) -> FitResult:
        """Minimise eq. (2) + λ‖W‖²_F; returns the fit (``fit.x`` is Ŵ, shape (D, P)).

        Starts: ``W0`` (a warm start) if given, random ones up to ``n_init`` in all (None:
        :data:`DEFAULT_N_INIT` ["pretrain"], or the warm start alone), and the teacher start
        :meth:`teacher_pretrain_start` if ``teacher_start``; the lowest objective is kept and
        ``fit.starts`` lists every start (overlap M/√(Q Q0))."""
        params = self.params if lam is None else self.params.replace(lam=lam)
        shape = (self.D, self.sizes.P)
        check_n_init(n_init)
        if math.isinf(params.lam):
            W = torch.zeros(shape, device=self.device, dtype=self.dtype)
            return FitResult(W, float("nan"), 0.0, 0, 0, True, "lam = inf: W = 0", 0.0)
        starts = self._starts(
            "pretrain", shape, W0, n_init, teacher_start, lambda: self.teacher_pretrain_start(lam)
        )
        train = self.train

        def objective(W):
            return pretrain_objective(W, train, params, self.centering)

        def overlap(W):
            op = self.order_parameters(W, None)
            return op["M"] / math.sqrt(op["Q"] * op["Q0"]) if op["Q"] > 0 else 0.0

        return best_of_starts(
            objective,
            starts,
            overlap,
            desc=f"pretrain D={self.D}",
            gtol=gtol,
            max_iter=max_iter,
            progress=progress,
        )

    def finetune(self, W_hat: torch.Tensor, lam_ft: float | None = None, **options) -> FitResult:
        """Minimise eq. (3) + λ'‖w‖² with Ŵ frozen; ``fit.x`` is ŵ (D,), signed so that m ≥ 0.

        ``options``: those of :func:`~hdlora.simulation.search.finetune_stage` (``w0``,
        ``n_init`` — None: :data:`~hdlora.simulation.starts.DEFAULT_N_INIT` ["finetune"], the
        first non-warm start the spectral one unless ``spectral_start=False`` —,
        ``teacher_start`` (w = w*), ``bayes_start``, ``basin_hops``, ``gtol``, ``max_iter``,
        ``progress``); ``fit.starts`` records the overlap o_w of each start. The start from
        the data reads the centred frozen field z = finetune_preactivation(w = 0)."""
        params = self.params if lam_ft is None else self.params.replace(lam_ft=lam_ft)
        ft = self.ft
        A_frozen = frozen_preactivation(ft.X, W_hat)

        def objective_at(lam_ft):
            p = params.replace(lam_ft=lam_ft)
            return lambda w: finetune_objective(w, A_frozen, W_hat, ft, p, self.centering)

        def training_data():
            w_zero = torch.zeros(self.D, device=ft.X.device, dtype=ft.X.dtype)
            z = finetune_preactivation(A_frozen, ft.X, W_hat, w_zero, self.centering)
            return ft.X, ft.target, z, params.activation

        return finetune_stage(
            objective_at,
            params.lam_ft,
            self.teacher.w_star,
            self.seed,
            desc=f"finetune D={self.D}",
            training_data=training_data,
            **options,
        )

    # ------------------------------------------------------------------ active fine-tuning
    def select_active(self, W_hat: torch.Tensor, rho: float) -> SequenceSet:
        """Algorithm 1 on this experiment (:func:`hdlora.simulation.active.select_active`)."""
        return select_active(self, W_hat, rho)

    # ------------------------------------------------------------------ measurements
    def order_parameters(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        """Q0, Q, M, q0 (and q, m with ŵ) of eqs. (8)–(9): :func:`~hdlora.simulation.measure.
        order_parameters` with this experiment's teacher."""
        return order_parameters(self.teacher.W_star, self.teacher.w_star, W_hat, w_hat)

    def errors(self, W_hat: torch.Tensor, w_hat: torch.Tensor | None) -> dict[str, float]:
        """ℰ, ℒ/N (and ℰ', ℒ'/N', ℰ'' with ŵ): :func:`~hdlora.simulation.measure.errors`."""
        return errors(self, W_hat, w_hat)

    def observables(
        self,
        W_hat: torch.Tensor,
        w_hat: torch.Tensor,
        fits: dict[str, FitResult] | None = None,
        wall_time: float = math.nan,
    ) -> Observables:
        """The :class:`Observables` record (source = "simulation") of trained weights.

        ``w_hat=None`` measures the pre-training only (fine-tuning fields NaN). ``Delta_eff`` is
        Δ/2 + Q0 − 2M + Q of ``W_hat`` (eq. 25); ``rho`` and ``selection`` say how the
        fine-tuning set was chosen; ``info`` holds each fit's statistics, its starts
        (:func:`~hdlora.simulation.starts.fits_record`, prefixes ``pre_`` and ``ft_``) and, with
        ŵ, the measured effective noise ``Delta_eff_train`` of the fine-tuning set
        (:func:`~hdlora.simulation.measure.delta_eff_hat`)."""
        pre_only = w_hat is None
        op = self.order_parameters(W_hat, w_hat)
        err = self.errors(W_hat, w_hat)
        stats = fits_record(fits or {})
        info = {"n_test": self.n_test, "centering": self.centering, "device": str(self.device)}
        info["teacher"] = self.teacher_prior
        info |= stats.pop("info")
        if not pre_only:
            with torch.no_grad():
                z_ft = pretrain_preactivation(self.ft.X, W_hat, self.centering)
                d, se = delta_eff_hat(z_ft, self.ft.z_star_ext)
            info |= {"Delta_eff_train": d, "Delta_eff_train_se": se}
            info |= self.selection_info
        q, q0 = op.get("q", math.nan), op["q0"]
        overlap = abs(op["m"]) / math.sqrt(q * q0) if q > 0 else (math.nan if pre_only else 0.0)
        return Observables(
            params=self.params,
            source="simulation",
            **err,
            overlap=overlap,
            **op,
            Delta_eff=noise.delta_eff(self.params.Delta, op["Q0"], op["Q"], op["M"]),
            rho=math.nan if self.rho is None else self.rho,
            selection=self.selection,
            D=self.D,
            seed=self.seed,
            **stats,
            wall_time=wall_time,
            info=info,
        )
