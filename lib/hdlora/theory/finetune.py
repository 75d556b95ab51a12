r"""State evolution of the rank-one LoRA fine-tuning (Results 2, 3, 5; App. A.4–A.8).

Given the frozen pre-training — (Q0, Q, M, V) and Δ, or an "effective pre-training" — the
fine-tuning is a rank-one sequence model whose output channel carries the pre-training fields
(z*, z) as side information (App. A.4). The fixed point is sought in x = (m, q, v):

* training channel: (z*, z) ~ 𝒬 (Result 1) for e = 0, (z*, z) ~ ℛ (z = Prox(z*, z̃), eq. 17)
  for e = 1; χ* ~ N(0, I_T), χ̃ = m χ* + √(q − m²) ζ (eq. 62); χ = prox(χ*, χ̃, z*, z) (eq. 64);
* conjugates, eqs. (70)–(72):
      m̂ = (α'/v) E[χ*ᵀχ − (m/v) Tr C],   q̂ = (α'/v²) E‖χ − χ̃‖²,
      v̂ = α'T/v − (α'/v²) E Tr C − 2α' E ∂_qψ;
* input channel, eqs. (67)–(69): v = 1/(2λ' + v̂), m = m̂ v, q = (m̂² + q̂) v².

m = 0 is an exact fixed point (the w → −w symmetry): the iteration starts from m > 0 and
reports |m|. Errors: ℰ' (eq. 73) and ℰ'' (eq. 84) over fresh samples ((z*, z) ~ 𝒬 for e = 0
and e = 1), ℒ' over the training channel (law ℛ'), o_w = m/√(q q0); the replicon (78).
λ' = ∞ is the frozen baseline (eq. 79): m = q = v = 0.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from hdlora.activations import activation as activation_fn
from hdlora.fixed_point import OutOfDomain, solve
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.prox import pretrain_prox
from hdlora.prox_finetune import finetune_prox
from hdlora.symmetric import n_entries, to_matrix
from hdlora.theory.pretrain import PretrainResult, PretrainSamples, channel_fields, pretrain

log = logging.getLogger(__name__)

Q0_TEACHER_W = 1.0  # q0 = D⁻¹‖w*‖² → 1


@dataclass(frozen=True)
class EffectivePretraining:
    """A frozen pre-training given by its order parameters (Figures 2 and 4 fix M = 1 and vary
    Q0 = Q, so Q0 need not be 1 + κ0). V is only used for reused sequences (e = 1)."""

    Q0: float
    Q: float
    M: float
    V: float = 0.0

    def __post_init__(self):
        for name in ("Q0", "Q", "V"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
        if not np.isfinite(self.M) or self.M * self.M > self.Q * self.Q0 + 1e-12:
            raise ValueError(
                f"M must satisfy M² <= Q·Q0 (Cauchy–Schwarz), got M={self.M!r}, "
                f"Q={self.Q!r}, Q0={self.Q0!r}"
            )


@dataclass
class FinetuneSamples:
    """Common random numbers of one solve (shapes (n, T) or (n, L))."""

    chi_star: np.ndarray
    zeta: np.ndarray
    g: np.ndarray
    zeta_pre: np.ndarray
    test_chi_star: np.ndarray
    test_zeta: np.ndarray
    test_g: np.ndarray
    test_zeta_pre: np.ndarray

    @classmethod
    def draw(cls, n_mc: int, T: int, seed: int) -> FinetuneSamples:
        if isinstance(n_mc, bool) or int(n_mc) != n_mc or n_mc < 2:
            raise ValueError(f"n_mc must be an integer >= 2, got n_mc={n_mc!r}")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        n, L = int(n_mc), n_entries(T)
        return cls(*(rng.standard_normal((n, k)) for k in (T, T, L, L, T, T, L, L)))


def side_fields(pre, Delta, T, g, zeta, activation, reuse):
    """(z*, z) as (n, T, T) matrices: law 𝒬 of eq. (13), or ℛ of eq. (17) when ``reuse``."""

    z_star, z_tilde, _ = channel_fields(pre.Q, pre.M, pre.Q0, Delta, PretrainSamples(g, zeta), T)
    z = z_tilde
    info = {}
    if reuse and pre.V > 0:
        r = pretrain_prox(z_star, z_tilde, pre.V, T, activation)
        z = r.h
        info = {"pretrain_prox_failed": r.n_failed}
    return to_matrix(z_star, T), to_matrix(z, T), info


@dataclass
class FinetuneResult:
    """Fixed point of the fine-tuning state evolution and its errors."""

    params: Params
    q: float
    m: float
    v: float
    q_hat: float
    m_hat: float
    v_hat: float
    ft_test_error: float
    ft_test_error_se: float
    ft_train_error: float
    ft_train_error_se: float
    forgetting_error: float
    forgetting_error_se: float
    overlap: float
    replicon: float
    replicon_stable: bool
    converged: bool
    n_iter: int
    residual: float
    n_mc: int
    seed: int
    wall_time: float
    info: dict = field(default_factory=dict)


def _mean_se(x):
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def errors(params: Params, pre, samples: FinetuneSamples, m, q, chi_train, z_star_tr, z_tr):
    """ℰ' (73), ℰ'' (84) on fresh samples and ℒ' on the training channel: (mean, se) each."""
    sigma = activation_fn(params.activation)
    T = params.T
    eye = np.eye(T)
    q0 = Q0_TEACHER_W
    zs, z, _ = side_fields(
        pre, params.Delta, T, samples.test_g, samples.test_zeta_pre, params.activation, reuse=False
    )
    cs = samples.test_chi_star * math.sqrt(q0)
    c = (m / q0) * cs + math.sqrt(max(q - m * m / q0, 0.0)) * samples.test_zeta

    def outer(x):
        return x[:, :, None] * x[:, None, :]

    student = sigma(z + outer(c) - q * eye)
    test = ((student - sigma(zs + outer(cs) - q0 * eye)) ** 2).sum(axis=(1, 2))
    forget = ((student - sigma(zs)) ** 2).sum(axis=(1, 2))
    train_target = sigma(z_star_tr + outer(samples.chi_star * math.sqrt(q0)) - q0 * eye)
    train = ((sigma(z_tr + outer(chi_train) - q * eye) - train_target) ** 2).sum(axis=(1, 2))
    return _mean_se(test), _mean_se(train), _mean_se(forget)


def finetune(
    params: Params,
    pretrain_result: PretrainResult | EffectivePretraining,
    n_mc: int = 30000,
    seed: int = 0,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    x0: tuple[float, float, float] | None = None,
    damping: float = 0.5,
    progress: bool | None = None,
) -> FinetuneResult:
    r"""Solve the fine-tuning state evolution, eqs. (67)–(72), and evaluate ℰ', ℒ', ℰ'', o_w.

    Parameters
    ----------
    params : the model (uses T, Δ, α', λ', σ, e = ``reuse``).
    pretrain_result : a :class:`PretrainResult` or an :class:`EffectivePretraining` (anything
        with Q0, Q, M, V).
    n_mc, seed : Monte-Carlo samples (common random numbers) and their seed.
    tol, max_iter, damping : of the Anderson-accelerated fixed point on (m, q, v).
    x0 : initial (m, q, v), m > 0.
    """
    t0 = time.perf_counter()
    pre = pretrain_result
    T = params.T
    q0 = Q0_TEACHER_W
    samples = FinetuneSamples.draw(n_mc, T, seed)
    zs_tr, z_tr, side_info = side_fields(
        pre, params.Delta, T, samples.g, samples.zeta_pre, params.activation, params.reuse
    )
    chi_star = samples.chi_star * math.sqrt(q0)
    ap = params.alpha_ft

    if math.isinf(params.lam_ft):  # no LoRA: ŵ = 0, the frozen baseline of eq. (79)
        (E, E_se), (L, L_se), (F, F_se) = errors(
            params, pre, samples, 0.0, 0.0, np.zeros_like(chi_star), zs_tr, z_tr
        )
        return FinetuneResult(
            params,
            0.0,
            0.0,
            0.0,
            math.nan,
            math.nan,
            math.nan,
            E,
            E_se,
            L,
            L_se,
            F,
            F_se,
            0.0,
            0.0,
            True,
            True,
            0,
            0.0,
            int(n_mc),
            int(seed),
            time.perf_counter() - t0,
            {"message": "lam_ft = inf: w = 0", **side_info},
        )
    cache: dict = {"chi": None}

    def output_channel(m, q, v, warm, both_signs=True):
        chi_tilde = (m / q0) * chi_star + math.sqrt(max(q - m * m / q0, 0.0)) * samples.zeta
        r = finetune_prox(
            chi_star,
            chi_tilde,
            zs_tr,
            z_tr,
            q,
            v,
            params.activation,
            q0=q0,
            warm=warm,
            both_signs=both_signs,
        )
        m_hat = ap / v * ((chi_star * r.chi).sum(axis=1) - m / v * r.trace_C).mean()
        q_hat = ap / v**2 * ((r.chi - chi_tilde) ** 2).sum(axis=1).mean()
        v_hat = ap * T / v - ap / v**2 * r.trace_C.mean() - 2 * ap * r.dq_psi.mean()
        return m_hat, q_hat, v_hat, r, chi_tilde

    def G(x):
        m, q, v = x
        # warm start between iterations; every start (±χ̃) at the first and the final evaluation
        m_hat, q_hat, v_hat, r, _ = output_channel(m, q, v, cache["chi"], both_signs=False)
        cache["chi"] = r.chi
        denom = 2 * params.lam_ft + v_hat
        if not denom > 0:
            raise OutOfDomain(f"2λ' + v̂ = {denom} <= 0")
        v_new = 1.0 / denom
        return np.array([m_hat * v_new, (m_hat**2 + q_hat) * v_new**2, v_new])

    def project(x):
        m, q, v = x
        return x if (q > 0 and v > 0 and m * m < q * q0) else None

    x = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    if project(x) is None or x[0] <= 0:
        raise ValueError(f"x0 = (m, q, v) must satisfy m > 0, q > m², v > 0; got {tuple(x)}")
    n_iter = 0
    for _round in range(3):
        fp = solve(
            G,
            x,
            tol=tol,
            max_iter=max_iter - n_iter,
            damping=damping,
            project=project,
            progress=progress,
            desc=f"finetune SE lam_ft={params.lam_ft:g}",
        )
        n_iter += fp.n_iter
        x = fp.x
        # final evaluation from every start (±χ̃ and the warm start): if another start found a
        # better proximal, the fixed point is solved again from there
        m_hat, q_hat, v_hat, r, _ = output_channel(*x, cache["chi"])
        changed = float(np.abs(r.chi - cache["chi"]).max())
        cache["chi"] = r.chi
        if not fp.converged or changed < 1e-8 or n_iter >= max_iter:
            break
        log.info("finetune: a better proximal found by another start (change %.2e)", changed)
    fp.n_iter = n_iter
    m, q, v = x
    (E, E_se), (L, L_se), (F, F_se) = errors(params, pre, samples, m, q, r.chi, zs_tr, z_tr)
    Hpsi = -r.hessian
    Mrep = np.linalg.inv(v * Hpsi) + np.eye(T)
    replicon = float(ap * (Mrep * Mrep).sum(axis=(1, 2)).mean())
    m_abs = abs(m)
    info = {
        "prox_failed": r.n_failed,
        "prox_disagree": r.n_disagree,
        "message": fp.message,
        **side_info,
    }
    converged = fp.converged and r.n_failed == 0
    return FinetuneResult(
        params,
        q,
        m_abs,
        v,
        q_hat,
        m_hat,
        v_hat,
        E,
        E_se,
        L,
        L_se,
        F,
        F_se,
        m_abs / math.sqrt(q * q0),
        replicon,
        replicon < 1,
        converged,
        fp.n_iter,
        fp.residual,
        int(n_mc),
        int(seed),
        time.perf_counter() - t0,
        info,
    )


def state_evolution(
    params: Params,
    n_mc: int = 30000,
    seed: int = 0,
    *,
    progress: bool | None = None,
    tol: float = 1e-6,
) -> Observables:
    """Pre-training then fine-tuning: one :class:`Observables` record (source = "theory")."""
    t0 = time.perf_counter()
    pre = pretrain(params, n_mc, seed, tol=tol, progress=progress)
    ft = finetune(params, pre, n_mc, seed, tol=tol, progress=progress)
    obs = pre.observables()
    obs.ft_test_error = ft.ft_test_error
    obs.ft_train_error = ft.ft_train_error
    obs.forgetting_error = ft.forgetting_error
    obs.overlap = ft.overlap
    obs.q0, obs.q, obs.m, obs.v = Q0_TEACHER_W, ft.q, ft.m, ft.v
    obs.converged = pre.converged and ft.converged
    obs.wall_time = time.perf_counter() - t0
    obs.info = {
        f"pre_{k}"
        if k in ("n_iter", "residual", "message", "replicon", "replicon_stable")
        else k: val
        for k, val in obs.info.items()
    }
    obs.info.update(
        ft_test_error_se=ft.ft_test_error_se,
        ft_train_error_se=ft.ft_train_error_se,
        forgetting_error_se=ft.forgetting_error_se,
        ft_replicon=ft.replicon,
        ft_replicon_stable=ft.replicon_stable,
        q_hat=ft.q_hat,
        m_hat=ft.m_hat,
        v_hat=ft.v_hat,
        ft_n_iter=ft.n_iter,
        ft_residual=ft.residual,
        ft_message=ft.info.get("message", ""),
        ft_prox_disagree=ft.info.get("prox_disagree", 0),
    )
    return obs
