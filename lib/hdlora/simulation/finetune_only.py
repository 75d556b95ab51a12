r"""Fine-tuning alone at dimension D, with the frozen map given by its order parameters.

For fresh fine-tuning sequences (e = 0) the fine-tuning sees the pre-trained map only through the
pair of frozen fields (z*_ext, z) of each sequence, which are Gaussian with the law 𝒬 of Result 1,
independent of the sequences' projections on w, w* (the decoupling of App. A.4):

    for a ≤ b, s = 1 + δ_ab, A0 = Q0 + Δ/2, B = Q − M²/A0, g, ζ i.i.d. N(0, 1):
    z*_ab = √(s A0) g,    z_ab = √s (M/√A0 g + √B ζ),

i.e. Cov(z*_ab, z_ab) = s [[Δ/2 + Q0, M], [M, Q]] (eq. 13; z*_ext contains the label noise ξ).
:class:`FinetuneExperiment` draws these fields, not Ŵ, W* or ξ, so that Q0, Q, M can be set at
will (Figs. 2, 4, 5 fix M = 1 and vary Q0 = Q) and D can be large: the sequences X (n, T, D)
are i.i.d. N(0, 1), drawn independently of the fields, for χ = Xw/√D, χ* = Xw*/√D and the
Gram matrices G = XXᵀ/D. The student pre-activation is z + χχᵀ − q I_T (q = ‖w‖²/D, population
centring) and the target z*_ext + χ*χ*ᵀ − q0 I_T (q0 = ‖w*‖²/D); the loss of a sequence is the
exact D⁻¹‖σ(z)X − y‖²_F = Tr(E G Eᵀ) of :mod:`hdlora.model.losses` (whose functions are used
here: the frozen field enters as the already-centred ``A_frozen`` of
:func:`~hdlora.model.losses.finetune_objective`, with a zero frozen map so that only q is
subtracted). One loss + gradient costs two products with X, as in the two-stage simulator.

This is the D → ∞ law of the frozen fields: at finite D the real fields are not exactly
Gaussian and are weakly (O(D^{-1/2})) correlated with G, χ, χ*; tests/test_simulate_finetune.py
compares the two simulators. Reused sequences (e = 1) are refused: there the training fields
follow ℛ (Result 2), which depends on the pre-training's training set.

Active fine-tuning (Algorithm 1, ``rho``): N̄' = round(N'/ρ) candidate fields are drawn (no X is
needed to score them), the N' whose σ(z_μ) is closest to σ(0) are kept, and only then their
sequences X are drawn. Test data (10 D fresh sequences by default) always follow 𝒬.
"""

from __future__ import annotations

import math
import time

import torch

from hdlora.model.activations import activation
from hdlora.model.data import (
    SequenceSet,
    TeacherPrior,
    check_teacher,
    draw_sequences,
    on_sphere,
    stream_generators,
)
from hdlora.model.losses import finetune_objective, finetune_preactivation, sample_errors
from hdlora.observables import Observables
from hdlora.params import EffectivePretraining, Params
from hdlora.simulation.active import active_order, check_rho
from hdlora.simulation.experiment import default_device
from hdlora.simulation.lbfgs import FitResult
from hdlora.simulation.measure import delta_eff_hat, finetune_overlap, test_set_size
from hdlora.simulation.search import DEFAULT_BASIN_HOPS, finetune_stage
from hdlora.simulation.starts import fits_record
from hdlora.theory import noise

#: independent random streams of one fine-tuning experiment
STREAMS = ("teacher", "fields", "sequences", "test_fields", "test_sequences")
#: sequences per block when drawing the test set (bounds the memory of X)
_TEST_BLOCK_ELEMENTS = 2**23


def as_effective(effective) -> EffectivePretraining:
    """An :class:`EffectivePretraining` from anything with Q0, Q, M (e.g. an Observables)."""
    if isinstance(effective, EffectivePretraining):
        return effective
    try:
        return EffectivePretraining(
            Q0=float(effective.Q0), Q=float(effective.Q), M=float(effective.M)
        )
    except AttributeError as err:
        raise ValueError(
            "effective must be a hdlora.params.EffectivePretraining (or have Q0, Q, M), "
            f"got {type(effective).__name__}"
        ) from err


def draw_frozen_fields(
    n: int, T: int, effective: EffectivePretraining, Delta: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(z*_ext, z) of n sequences under 𝒬 (Result 1), symmetric (n, T, T) float64 tensors.

    For a ≤ b: z*_ab = √(s A0) g, z_ab = √s (M/√A0 g + √B ζ) with s = 1 + δ_ab,
    A0 = Q0 + Δ/2, B = Q − M²/A0 (clipped at 0) and g, ζ i.i.d. N(0, 1)."""
    iu = torch.triu_indices(T, T)
    L = iu.shape[1]
    g = torch.randn(n, L, generator=generator, dtype=torch.float64)
    zeta = torch.randn(n, L, generator=generator, dtype=torch.float64)
    s = 1.0 + (iu[0] == iu[1]).to(torch.float64)
    Q0, Q, M = effective.Q0, effective.Q, effective.M
    A0 = Q0 + Delta / 2
    if A0 > 0:
        B = max(Q - M * M / A0, 0.0)
        z_star = (s * A0).sqrt() * g
        z = s.sqrt() * (M / math.sqrt(A0) * g + math.sqrt(B) * zeta)
    else:  # no teacher field at all: M = 0 by Cauchy–Schwarz
        z_star = torch.zeros_like(g)
        z = (s * Q).sqrt() * zeta

    def to_matrix(v):
        out = torch.zeros(n, T, T, dtype=torch.float64)
        out[:, iu[0], iu[1]] = v
        out[:, iu[1], iu[0]] = v
        return out

    return to_matrix(z_star), to_matrix(z)


class FinetuneExperiment:
    r"""The data of one fine-tuning-only realisation at dimension D, and the fine-tuning on it.

    Parameters
    ----------
    params : the model; uses T, Δ, α' (N' = α'D), λ' (default of :meth:`finetune`), σ.
        ``reuse`` must be False (e = 0).
    effective : the frozen map, an :class:`~hdlora.params.EffectivePretraining` (Q0, Q, M), or
        anything with those attributes.
    D, seed : dimension and the one seed of every draw and every random start.
    rho : None (uniform fine-tuning set) or the labelling ratio ρ = N'/N̄' ∈ (0, 1] of active
        fine-tuning (Algorithm 1).
    n_test : fresh test sequences (default 10 D).
    teacher : w* rescaled to q0 = 1 ("sphere", default: the limit the theory describes) or with
        i.i.d. N(0, 1) entries ("gaussian"): :func:`~hdlora.model.data.draw_teacher`.
    device, dtype : where and in what precision to compute (default CUDA if present, float64).
    """

    def __init__(
        self,
        params: Params,
        effective,
        D: int,
        seed: int = 0,
        *,
        rho: float | None = None,
        n_test: int | None = None,
        teacher: TeacherPrior = "sphere",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        check_teacher(teacher)
        self.teacher_prior = teacher
        if params.reuse:
            raise ValueError(
                "simulate_finetune draws fresh fine-tuning sequences (e = 0): reuse=True (e = 1) "
                "needs the pre-training's own sequences, use hdlora.simulation.simulate"
            )
        self.params = params
        self.effective = as_effective(effective)
        self.sizes = params.sizes(D)
        self.D = self.sizes.D
        self.T = params.T
        self.seed = int(seed)
        self.rho = check_rho(rho)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        self.n_test = test_set_size(n_test, self.D)

        # spawn_key (2,) keeps these streams apart from those of the two-stage Experiment
        g = stream_generators(self.seed, STREAMS, spawn_key=(2,))
        conv = dict(device=self.device, dtype=self.dtype)
        w_star = torch.randn(self.D, generator=g["teacher"], dtype=torch.float64)
        self.w_star = (on_sphere(w_star) if teacher == "sphere" else w_star).to(**conv)
        n = self.sizes.N_ft
        self.n_candidates = n if self.rho is None else max(round(n / self.rho), n)
        z_star_pool, z_pool = draw_frozen_fields(
            self.n_candidates, self.T, self.effective, params.Delta, g["fields"]
        )
        self.pool_delta_eff_hat = delta_eff_hat(z_pool, z_star_pool)
        if self.rho is not None:
            keep = active_order(z_pool, n, params.activation)
            z_star_ext, z = z_star_pool[keep], z_pool[keep]
        else:
            z_star_ext, z = z_star_pool, z_pool
        self.train_delta_eff_hat = delta_eff_hat(z, z_star_ext)
        X = draw_sequences(n, self.D, self.T, g["sequences"])
        #: the frozen (centred) student field z of each training sequence, (N', T, T)
        self.z = z.to(**conv)
        self.train = self._labelled(X.to(**conv), z_star_ext.to(**conv))
        # the test set is drawn anew, identically, by each call of errors()
        self._test_states = (g["test_fields"].get_state(), g["test_sequences"].get_state())
        # the frozen map itself is already in z: a zero one makes the centring subtract q only
        self._W_zero = torch.zeros(self.D, 1, **conv)

    @property
    def q0(self) -> float:
        return float(self.w_star @ self.w_star) / self.D

    def _labelled(self, X: torch.Tensor, z_star_ext: torch.Tensor) -> SequenceSet:
        """The set of the fine-tuning task on sequences X with extensive target fields."""
        D, T = self.D, self.T
        chi_star = X @ self.w_star / D**0.5
        eye = torch.eye(T, dtype=X.dtype, device=X.device)
        z_star = z_star_ext + chi_star[:, :, None] * chi_star[:, None, :] - self.q0 * eye
        sigma = activation(self.params.activation)
        return SequenceSet(
            X=X,
            xi=None,  # the label noise is inside the drawn z*_ext
            gram=X @ X.transpose(-1, -2) / D,
            z_star=z_star,
            target=sigma(z_star),
            chi_star=chi_star,
            z_star_ext=z_star_ext,
        )

    def objective(self, w: torch.Tensor, lam_ft: float | None = None) -> torch.Tensor:
        """Eq. (3) + λ'‖w‖² on the training set (the model's own :func:`finetune_objective`)."""
        params = self.params if lam_ft is None else self.params.replace(lam_ft=lam_ft)
        return finetune_objective(w, self.z, self._W_zero, self.train, params)

    def finetune(self, lam_ft: float | None = None, **options) -> FitResult:
        """Minimise eq. (3) + λ'‖w‖² from several starts, as
        :meth:`hdlora.simulation.Experiment.finetune` (the same ``options``, the same stage
        :func:`~hdlora.simulation.search.finetune_stage`); ŵ signed so that m ≥ 0."""
        lam_ft = self.params.lam_ft if lam_ft is None else lam_ft
        train = self.train
        return finetune_stage(
            lambda lam: lambda w: self.objective(w, lam),
            lam_ft,
            self.w_star,
            self.seed,
            desc=f"finetune-only D={self.D}",
            training_data=lambda: (train.X, train.target, self.z, self.params.activation),
            **options,
        )

    @property
    def _conv(self):
        return self.device, self.dtype

    def test_blocks(self):
        """The fresh test sequences, block by block: (X, z*_ext, z) with X (n, T, D) and the
        two fields (n, T, T) of 𝒬; the same draw at every call (blocks bound the memory)."""
        T, D = self.T, self.D
        g_fields, g_seq = torch.Generator(device="cpu"), torch.Generator(device="cpu")
        g_fields.set_state(self._test_states[0])
        g_seq.set_state(self._test_states[1])
        z_star_ext, z = draw_frozen_fields(
            self.n_test, T, self.effective, self.params.Delta, g_fields
        )
        block = max(1, _TEST_BLOCK_ELEMENTS // (T * D))
        for i in range(0, self.n_test, block):
            n = min(block, self.n_test - i)
            X = draw_sequences(n, D, T, g_seq).to(*self._conv)
            yield X, z_star_ext[i : i + n].to(*self._conv), z[i : i + n].to(*self._conv)

    @torch.no_grad()
    def errors(self, w: torch.Tensor) -> dict[str, float]:
        """ℰ', ℰ'' (eq. 84) and ℰ of the frozen map alone on fresh test sequences (𝒬 fields,
        the same sequences for the three), ℒ'/N' on the training set; with standard errors."""
        p = self.params
        ft, forget, frozen = [], [], []
        sigma = activation(p.activation)
        for X, zs, zf in self.test_blocks():
            data = self._labelled(X, zs)
            student = finetune_preactivation(zf, X, self._W_zero, w)
            ft.append(sample_errors(student, data, p))
            pre = SequenceSet(X=X, xi=None, gram=data.gram, z_star=zs, target=sigma(zs))
            forget.append(sample_errors(student, pre, p))
            frozen.append(sample_errors(zf, pre, p))
        train = sample_errors(
            finetune_preactivation(self.z, self.train.X, self._W_zero, w), self.train, p
        )

        def mean_se(parts):
            x = torch.cat(parts) if isinstance(parts, list) else parts
            return float(x.mean()), float(x.std() / x.shape[0] ** 0.5)

        out = {}
        for name, parts in (
            ("ft_test_error", ft),
            ("forgetting_error", forget),
            ("test_error", frozen),
            ("ft_train_error", train),
        ):
            out[name], out[f"{name}_se"] = mean_se(parts)
        return out

    def observables(
        self, w: torch.Tensor, fit: FitResult | None = None, wall_time: float = math.nan
    ) -> Observables:
        """The :class:`Observables` record (source = "simulation") of a fine-tuned ŵ."""
        eff, D = self.effective, self.D
        q, m, q0 = float(w @ w) / D, float(w @ self.w_star) / D, self.q0
        info = {
            "simulator": "finetune_only",
            "n_test": self.n_test,
            "device": str(self.device),
            "teacher": self.teacher_prior,
            "n_candidates": self.n_candidates,
            "Delta_eff_train": self.train_delta_eff_hat[0],
            "Delta_eff_train_se": self.train_delta_eff_hat[1],
            "Delta_eff_pool": self.pool_delta_eff_hat[0],
            "Delta_eff_pool_se": self.pool_delta_eff_hat[1],
        }
        stats = fits_record({"finetune": fit} if fit is not None else {})
        info |= stats.pop("info")
        return Observables(
            params=self.params,
            source="simulation",
            **self.errors(w),
            overlap=finetune_overlap(w, self.w_star),
            Q0=eff.Q0,
            Q=eff.Q,
            M=eff.M,
            q0=q0,
            q=q,
            m=m,
            beta=1.0,
            beta_star=noise.beta_star(eff.Q, eff.M, eff.Q0),
            Delta_eff=noise.delta_eff(self.params.Delta, eff.Q0, eff.Q, eff.M),
            rho=math.nan if self.rho is None else self.rho,
            selection="uniform" if self.rho is None else "active",
            D=D,
            seed=self.seed,
            **stats,
            wall_time=wall_time,
            info=info,
        )


def simulate_finetune(
    params: Params,
    effective,
    D: int,
    seed: int = 0,
    *,
    rho: float | None = None,
    n_init: int | None = None,
    teacher_start: bool = False,
    spectral_start: bool = True,
    bayes_start: bool = True,
    basin_hops: int = DEFAULT_BASIN_HOPS,
    w0: torch.Tensor | None = None,
    n_test: int | None = None,
    teacher: TeacherPrior = "sphere",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    gtol: float = 1e-6,
    max_iter: int = 20000,
    progress: bool | None = None,
) -> Observables:
    r"""Fine-tune at dimension D on a frozen map given by ``effective`` = (Q0, Q, M); no
    pre-training is run (see the module docstring for the construction, exact as D → ∞).

    Parameters
    ----------
    params : T, Δ, α', λ', σ of the model; ``reuse`` must be False.
    effective : :class:`~hdlora.params.EffectivePretraining` (or anything with Q0, Q, M).
        Pass ``effective.recalibrated(beta)`` for a recalibrated map.
    rho : None (uniform), or active fine-tuning with labelling ratio ρ ∈ (0, 1] (Algorithm 1).
    n_init, spectral_start, teacher_start, w0 : the starts: ``n_init`` of them (None: 4, i.e.
        :data:`~hdlora.simulation.starts.DEFAULT_N_INIT` ["finetune"]; the warm start ``w0``
        alone when given): the warm start, the spectral start (:func:`~hdlora.simulation.
        starts.spectral_init`, unless ``spectral_start=False``), random ones; plus w = w*
        with ``teacher_start``
        (a validation device: it uses the ground truth). The lowest objective is kept and every
        start is recorded (``info["ft_start{k}_…"]``, :func:`~hdlora.simulation.starts.
        starts_summary`); a :class:`~hdlora.diagnostics.StartsDisagreeWarning` says when their
        overlaps differ by more than :data:`~hdlora.simulation.starts.OVERLAP_DISAGREE`.
    bayes_start, basin_hops : the search for the lowest minimum
        (:func:`~hdlora.simulation.search.finetune_stage`): one more start from the data
        (default True) and at most ``basin_hops`` basin-hopping moves from the best start
        (default :data:`~hdlora.simulation.search.DEFAULT_BASIN_HOPS`; the search stops once
        settled, and makes no move where the starts agree on one minimum).
        ``bayes_start=False, basin_hops=0``: the starts alone. The record's ``info`` says what
        the search did (``ft_search_skipped``, ``ft_n_hops``, ``ft_search_settled``, …).
    n_test : fresh test sequences (default 10 D).

    Returns the :class:`Observables` (source = "simulation", ``info["simulator"] =
    "finetune_only"``): ℰ' (``ft_test_error``), ℰ'' (``forgetting_error``), ℰ of the frozen
    map alone (``test_error``), ℒ'/N' (``ft_train_error``), each with its standard error across
    samples; o_w, q, m, q0 of ŵ; Q0, Q, M, ``Delta_eff`` of ``effective``; ``rho``,
    ``selection``; in ``info`` the measured effective noise of the training set and of the
    candidate pool, ``Delta_eff_train`` and ``Delta_eff_pool`` (± ``_se``), the mean
    over the sequences of mean_{a≤b} (z − z*_ext)²_ab/(1 + δ_ab): Δ_eff (eq. 25) for a uniform
    set, towards Δ_eff,ActFT (eq. 28) as ρ → 0 (linear σ).
    """
    t0 = time.perf_counter()
    exp = FinetuneExperiment(
        params,
        effective,
        D,
        seed,
        rho=rho,
        n_test=n_test,
        teacher=teacher,
        device=device,
        dtype=dtype,
    )
    fit = exp.finetune(
        w0=w0,
        n_init=n_init,
        teacher_start=teacher_start,
        spectral_start=spectral_start,
        bayes_start=bayes_start,
        basin_hops=basin_hops,
        gtol=gtol,
        max_iter=max_iter,
        progress=progress,
    )
    return exp.observables(fit.x, fit, wall_time=time.perf_counter() - t0)
