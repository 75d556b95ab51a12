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

import math
import time
from dataclasses import dataclass

import numpy as np

from hdlora.diagnostics import RepliconWarning, warn
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory.fixed_point import OutOfDomain, solve
from hdlora.theory.laws import (
    Q0_TEACHER_W,
    FinetuneSamples,
    chi_tilde,
    finetune_errors,
    side_fields,
)
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.replicon import finetune_replicon


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


def finetune(
    params: Params,
    pretrain_result: Observables | EffectivePretraining,
    n_mc: int = 30000,
    seed: int = 0,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    x0: tuple[float, float, float] | None = None,
    damping: float = 0.5,
    progress: bool | None = None,
) -> Observables:
    r"""Solve the fine-tuning state evolution, eqs. (67)–(72), and evaluate ℰ', ℒ', ℰ'', o_w.

    Parameters
    ----------
    params : the model (uses T, Δ, α', λ', σ, e = ``reuse``).
    pretrain_result : the record of :func:`hdlora.theory.pretrain` or an
        :class:`EffectivePretraining` (anything with Q0, Q, M, V).
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
        (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
            params, pre, samples, 0.0, 0.0, np.zeros_like(chi_star), zs_tr, z_tr
        )
        return Observables(
            params=params,
            source="theory",
            ft_test_error=E,
            ft_test_error_se=E_se,
            ft_train_error=L,
            ft_train_error_se=L_se,
            forgetting_error=F,
            forgetting_error_se=F_se,
            overlap=0.0,
            Q0=pre.Q0,
            Q=pre.Q,
            M=pre.M,
            V=pre.V,
            q0=q0,
            q=0.0,
            m=0.0,
            v=0.0,
            converged=True,
            n_iter=0,
            residual=0.0,
            message="lam_ft = inf: w = 0",
            ft_replicon=0.0,
            ft_replicon_stable=True,
            n_mc=int(n_mc),
            seed=int(seed),
            wall_time=time.perf_counter() - t0,
            info=side_info,
        )
    cache: dict = {"chi": None}

    def output_channel(m, q, v, warm, both_signs=True):
        ct = chi_tilde(chi_star, samples.zeta, m, q, q0)
        r = finetune_prox(
            chi_star,
            ct,
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
        q_hat = ap / v**2 * ((r.chi - ct) ** 2).sum(axis=1).mean()
        v_hat = ap * T / v - ap / v**2 * r.trace_C.mean() - 2 * ap * r.dq_psi.mean()
        return m_hat, q_hat, v_hat, r

    def G(x):
        m, q, v = x
        # warm start between iterations; every start (±χ̃) at the first and the final evaluation
        m_hat, q_hat, v_hat, r = output_channel(m, q, v, cache["chi"], both_signs=False)
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
        m_hat, q_hat, v_hat, r = output_channel(*x, cache["chi"])
        changed = float(np.abs(r.chi - cache["chi"]).max())
        cache["chi"] = r.chi
        if not fp.converged or changed < 1e-8 or n_iter >= max_iter:
            break
    m, q, v = x
    (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
        params, pre, samples, m, q, r.chi, zs_tr, z_tr
    )
    rep = finetune_replicon(ap, v, r.hessian)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"fine-tuning replicon (78) = {rep.value:.3g} >= 1 at {params}: the replica-symmetric "
            "prediction need not describe the minimisers",
        )
    m_abs = abs(m)
    converged = fp.converged and r.n_failed == 0
    message = fp.message
    if r.n_failed:
        message += f"; {r.n_failed} proximal samples above tolerance"
    return Observables(
        params=params,
        source="theory",
        ft_test_error=E,
        ft_test_error_se=E_se,
        ft_train_error=L,
        ft_train_error_se=L_se,
        forgetting_error=F,
        forgetting_error_se=F_se,
        overlap=m_abs / math.sqrt(q * q0),
        Q0=pre.Q0,
        Q=pre.Q,
        M=pre.M,
        V=pre.V,
        q0=q0,
        q=q,
        m=m_abs,
        v=v,
        q_hat=q_hat,
        m_hat=m_hat,
        v_hat=v_hat,
        converged=converged,
        n_iter=n_iter,
        residual=fp.residual,
        message=message,
        ft_replicon=rep.value,
        ft_replicon_stable=rep.stable,
        n_mc=int(n_mc),
        seed=int(seed),
        wall_time=time.perf_counter() - t0,
        info={"prox_failed": r.n_failed, "prox_disagree": r.n_disagree, **side_info},
    )
