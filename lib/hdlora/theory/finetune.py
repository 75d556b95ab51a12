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

Precision (``method="rqmc"``, the default). The spread of the old i.i.d. path across seeds
(9 % on q at n_mc = 3·10⁴) came almost entirely from one estimator: in m̂ of eq. (70) the term
E[χ*ᵀχ] contains χ*ᵀχ̃, whose mean m T q0 is known exactly but whose sample average carries
~98 % of the per-sample variance of m̂ (per-sample sd of m̂ 21.7 for a mean 2.5). Averaging only
χ*ᵀ(χ − χ̃) and adding m T q0 (a control variate) cuts that variance ~56×. The fixed point does
not amplify the noise (ρ(∂G/∂x) ≈ 0.25) and no sample switched branch between the ±χ̃ starts
at that point. On top: scrambled-Sobol samples, a test set 8× larger for ℰ', ℰ'', and
delta-method standard errors (:mod:`hdlora.theory.precision`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from hdlora.diagnostics import ConvergenceWarning, RepliconWarning, warn
from hdlora.observables import Observables
from hdlora.params import EffectivePretraining, Params
from hdlora.theory import driver, noise
from hdlora.theory.fixed_point import OutOfDomain
from hdlora.theory.laws import (
    Q0_TEACHER_W,
    FinetuneSamples,
    active_selection,
    check_method,
    chi_tilde,
    finetune_errors,
    noise_variance,
    side_fields,
)
from hdlora.theory.precision import gradient, propagate, variance_shares
from hdlora.theory.prox_finetune import FinetuneProxResult, finetune_prox
from hdlora.theory.replicon import finetune_replicon

#: the test fields of FinetuneSamples (without the ``test_`` prefix)
TEST_FIELDS = ("chi_star", "zeta", "g", "zeta_pre")
#: the uninformed fixed point is solved on the coarse block only when it loses the selection by
#: more than this many standard errors of its free entropy (eq. 22) there
SELECT_MARGIN = 10.0


@dataclass
class FinetuneChannel(driver.ProxEvaluation):
    """One evaluation of the output channel (70)–(72): ``per_sample`` (n, 3) summands of
    (m̂, q̂, v̂) and the proximal record ``prox`` (:func:`finetune_prox`); ``point`` and
    ``objective`` are its χ (n, T) and F = −ψ (eq. 63)."""

    per_sample: np.ndarray
    prox: FinetuneProxResult


@dataclass
class FinetuneStage:
    """The fine-tuning's physics for :mod:`hdlora.theory.driver`: x = (m, q, v), the output
    channel (70)–(72) with the frozen training fields (z*, z) as side information, the input
    channel (67)–(69), the free entropy (22); the uninformed fixed point pins m = 0 (exact by
    the w → −w symmetry). ``control_variate``: E[χ*ᵀχ̃] = m T q0 in m̂ (module docstring)."""

    params: Params
    samples: FinetuneSamples
    zs_tr: np.ndarray
    z_tr: np.ndarray
    control_variate: bool
    name = "finetune"
    pinned = (0,)
    rounds = 3
    every_start_rounds = True

    def evaluate(self, x, samples, warm, every_start):
        m, q, v = x
        T, ap, q0 = self.params.T, self.params.alpha_ft, Q0_TEACHER_W
        k = len(samples.chi_star)
        cs = samples.chi_star * math.sqrt(q0)
        ct = chi_tilde(cs, samples.zeta, m, q, q0)
        r = finetune_prox(
            cs,
            ct,
            self.zs_tr[:k],
            self.z_tr[:k],
            q,
            v,
            self.params.activation,
            q0=q0,
            warm=warm,
            both_signs=every_start,
        )
        if self.control_variate:
            # control variate: E[χ*ᵀχ̃] = m T q0 exactly (eq. 62), so only χ*ᵀ(χ − χ̃) is
            # averaged; the i.i.d. term χ*ᵀχ̃ carried ~90 % of the variance of m̂
            mh = ap / v * ((cs * (r.chi - ct)).sum(axis=1) + m * T * q0 - m / v * r.trace_C)
        else:
            mh = ap / v * ((cs * r.chi).sum(axis=1) - m / v * r.trace_C)
        qh = ap / v**2 * ((r.chi - ct) ** 2).sum(axis=1)
        vh = ap * T / v - ap / v**2 * r.trace_C - 2 * ap * r.dq_psi
        return FinetuneChannel(np.stack([mh, qh, vh], axis=1), r)

    def input_channel(self, conjugates):
        m_hat, q_hat, v_hat = conjugates
        denom = 2 * self.params.lam_ft + v_hat
        if not denom > 0:
            raise OutOfDomain(f"2λ' + v̂ = {denom} <= 0")
        v_new = 1.0 / denom
        return np.array([m_hat * v_new, (m_hat**2 + q_hat) * v_new**2, v_new])

    def check(self, x_new, coarse):
        """The fine-tuning has no closed-form end point."""

    def project(self, x):
        m, q, v = x
        return x if (q > 0 and v > 0 and m * m < q * Q0_TEACHER_W) else None

    def free_entropy(self, x, conjugates, evaluation):
        """φ of eq. (22) at (m, q, v; m̂, q̂, v̂): E max ψ = −E F(prox) (F = −ψ)."""
        m, q, v = x
        m_hat, q_hat, v_hat = conjugates
        ap = self.params.alpha_ft
        return float(
            -m * m_hat / ap
            + (q * v_hat - v * q_hat) / (2 * ap)
            + (m_hat**2 + q_hat) / (2 * ap * (2 * self.params.lam_ft + v_hat))
            - evaluation.objective.mean()
        )

    def desc(self, kind, coarse):
        return f"finetune SE ({kind}{', coarse' if coarse else ''}) lam_ft={self.params.lam_ft:g}"


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
    method: str = "rqmc",
    select: bool = True,
    rho: float | None = None,
    beta: float = 1.0,
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
    method : "rqmc" (default): randomised quasi-Monte Carlo samples (8 independent scrambled
        Sobol blocks, n_mc rounded to 8·2^k), the control variate E[χ*ᵀχ̃] = m T q0 in m̂ (70),
        a coarse solve on one block before the full one, and standard errors of m, q, o_w, ℰ',
        ℰ'' from the blocks (:mod:`hdlora.theory.precision`; ``info["jacobian_spectral_radius"]``
        is ρ(∂G/∂x) at the fixed point). "mc": the original i.i.d. path (standard errors of the
        errors' test averages only).
    select : fixed-point selection. The state evolution always has the uninformed fixed point
        m = 0 (w → −w symmetry) and may have an informed one (m > 0). With ``select`` both are
        solved (the informed one from ``x0``, the uninformed one with m pinned to 0) and the one
        with the larger free entropy φ (eq. 22) is returned: φ is the zero-temperature limit of
        (βN')⁻¹ log ∫ exp(−β(ℒ' + λ'‖w‖²)) dw, so −φ (``info["predicted_objective"]``) is the
        minimal training objective (ℒ' + λ'‖ŵ‖²)/N' predicted at that point, and the largest φ
        describes the global minimiser. ``info``: ``fixed_point`` ("informed"/"uninformed"),
        ``n_fixed_points`` (distinct ones found), ``free_entropy_<kind>`` of each (and its
        standard error ``free_entropy_<kind>_se``). With ``method="rqmc"`` the uninformed point
        is first solved on one block; when its φ is below the informed one by more than
        ``SELECT_MARGIN`` standard errors it is not refined (``uninformed_coarse_only``).
    rho : active fine-tuning (Algorithm 1) with labelling ratio ρ = N'/N̄' ∈ (0, 1]: the
        training channel's frozen fields are conditioned as App. D says (per block, the n/ρ
        candidates of 𝒬 with the smallest ‖σ(z) − σ(0)‖²_F kept; :func:`~hdlora.theory.laws.
        active_selection`), the test errors use the unconditioned law. ``None``: uniform
        selection. Fresh sequences only (e = 0). ``info["Delta_eff_train"]`` is the measured
        noise variance of the training fields (eq. 28 is its z → 0 limit).
    beta : recalibration of the frozen map, Ŵ → √β Ŵ (eq. 26, App. E): every frozen field z
        (training and test) is multiplied by β; the record's Q, M are the recalibrated β²Q, βM,
        ``beta_star`` = M/Q of the unscaled pre-training.
    """
    t0 = time.perf_counter()
    check_method(method)
    _check_protocol(params, rho, beta)
    pre = pretrain_result
    stage, frozen, side_info = _training_channel(params, pre, n_mc, seed, method, rho, beta)
    context = dict(n_mc=int(n_mc), seed=int(seed), t0=t0, method=method, side_info=side_info)
    if math.isinf(params.lam_ft):  # no LoRA: ŵ = 0, the frozen baseline of eq. (79)
        return _frozen_baseline(stage, pre, frozen, beta, **context)
    x_start = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    if stage.project(x_start) is None or x_start[0] <= 0:
        raise ValueError(f"x0 = (m, q, v) must satisfy m > 0, q > m², v > 0; got {tuple(x_start)}")
    solver = dict(tol=tol, max_iter=max_iter, damping=damping, progress=progress)
    found, retried = _fixed_points(stage, x_start, x0 is not None, select, solver)
    chosen, n_distinct = driver.select(found, "informed", "uninformed", _informed)
    notes = _selection_notes(found, chosen, select, retried)
    info = {
        "coarse_iter": sum(f.coarse_iter for f in found.values()),
        **driver.selection_info(found, chosen, n_distinct),
        "uninformed_coarse_only": bool(select and found["uninformed"].coarse_only),
    }
    n_iter = sum(f.n_iter for f in found.values())
    return _record(stage, pre, found[chosen], frozen, beta, notes, n_iter, info, **context)


def _check_protocol(params: Params, rho, beta) -> None:
    """β > 0 finite; ρ ∈ (0, 1] or None, and Algorithm 1 only with fresh sequences."""
    if isinstance(beta, bool) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got beta={beta!r}")
    if rho is not None:
        if isinstance(rho, bool) or not (0 < rho <= 1):
            raise ValueError(f"rho must satisfy 0 < rho <= 1 (or None), got rho={rho!r}")
        if params.reuse:
            raise ValueError("rho (active fine-tuning, Algorithm 1) needs fresh sequences, e = 0")


def _training_channel(params: Params, pre, n_mc, seed, method, rho, beta):
    """The stage on its samples: the frozen training fields (z*, z) of law 𝒬 (e = 0) or ℛ
    (e = 1), selected by Algorithm 1 when ``rho`` is set and recalibrated by β; with the
    record's frozen fields (recalibrated Q, M, Δ_eff of eq. 25) and the measured noise."""
    T = params.T
    samples = FinetuneSamples.draw(n_mc, T, seed, method)
    if rho is not None:
        n, blocks = len(samples.g), samples.blocks
        g_sel, zeta_sel = active_selection(
            pre, params.Delta, T, params.activation, n, blocks, rho, seed, beta
        )
        samples = dataclasses.replace(samples, g=g_sel, zeta_pre=zeta_sel)
    zs_tr, z_tr, side_info = side_fields(
        pre, params.Delta, T, samples.g, samples.zeta_pre, params.activation, params.reuse
    )
    z_tr = beta * z_tr
    Q_used, M_used = beta * beta * pre.Q, beta * pre.M
    frozen = dict(
        Q0=pre.Q0,
        Q=Q_used,
        M=M_used,
        V=pre.V,
        beta=float(beta),
        beta_star=noise.beta_star(pre.Q, pre.M, pre.Q0),
        Delta_eff=noise.delta_eff(params.Delta, pre.Q0, Q_used, M_used),
        rho=math.nan if rho is None else float(rho),
        selection="uniform" if rho is None else "active",
    )
    side_info = {**side_info, "Delta_eff_train": noise_variance(zs_tr, z_tr)}
    stage = FinetuneStage(params, samples, zs_tr, z_tr, control_variate=method == "rqmc")
    return stage, frozen, side_info


def _frozen_baseline(stage, pre, frozen, beta, *, n_mc, seed, t0, method, side_info):
    """λ' = ∞: ŵ = 0, the frozen baseline of eq. (79) (m = q = v = 0, exact)."""
    params, samples = stage.params, stage.samples
    chi = np.zeros_like(samples.chi_star)
    (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
        params, pre, samples, 0.0, 0.0, chi, stage.zs_tr, stage.z_tr, beta
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
        overlap_se=0.0,  # exact: ŵ = 0
        **frozen,
        q0=Q0_TEACHER_W,
        q=0.0,
        q_se=0.0,
        m=0.0,
        m_se=0.0,
        v=0.0,
        converged=True,
        n_iter=0,
        residual=0.0,
        message="lam_ft = inf: w = 0",
        ft_replicon=0.0,
        ft_replicon_stable=True,
        n_mc=n_mc,
        seed=seed,
        wall_time=time.perf_counter() - t0,
        info={"method": method, **side_info},
    )


def _fixed_points(stage: FinetuneStage, x_start, continuation: bool, select: bool, solver):
    """The informed fixed point from ``x_start`` and, with ``select``, the uninformed one.

    A continuation start (a sweep's neighbour) can fail where the default start does not
    (measured: Figure 2, α' = 3, Δ_eff = 10/3, replicon 1.26): it is retried once from there.
    The uninformed point matters only through its free entropy: with RQMC it is first solved
    on the coarse block, and kept there when it loses the selection by more than
    ``SELECT_MARGIN`` standard errors of E F(prox) on the block."""
    found = {"informed": driver.run_stage(stage, x_start, **solver)}
    retried = False
    if not found["informed"].converged and continuation:
        retry = driver.run_stage(stage, np.array((0.5, 0.5, 1.0)), **solver)
        retry.n_iter += found["informed"].n_iter
        found["informed"], retried = retry, True
    if not select:
        return found, retried
    informed = found["informed"]
    x_pin = np.array([0.0, x_start[1], x_start[2]])
    uninformed = None
    coarse = stage.control_variate and stage.samples.blocks > 1
    if coarse and informed.converged and _informed(informed.x):
        uninformed = driver.run_stage(stage, x_pin, pin=True, coarse_only=True, **solver)
        margin = SELECT_MARGIN * uninformed.phi_se
        if not (uninformed.converged and informed.phi - uninformed.phi > margin):
            uninformed = None
    found["uninformed"] = uninformed or driver.run_stage(stage, x_pin, pin=True, **solver)
    return found, retried


def _selection_notes(found, chosen, select, retried) -> tuple[bool, str]:
    """(whether the selection is decided, the record's message on how the point was found)."""
    informed = found["informed"]
    decided, message = True, ""
    if select and chosen == "uninformed" and _informed(informed.x) is False:
        message += "; the iteration from m > 0 did not reach an informed fixed point"
    if select and chosen == "uninformed" and not informed.converged and _informed(informed.x):
        # the informed iteration stopped away from m = 0 without converging: the selection
        # cannot compare the free entropies, so the point is not a converged prediction
        decided = False
        message += "; the informed fixed point did not converge (the selection is undecided)"
    if retried:
        message += "; informed fixed point retried from the default start"
    if found[chosen].fell_back:
        message += (
            "; the best-of-all-starts proximal map did not converge (samples switching between "
            "local minima): warm-started fixed point"
        )
    return decided, message


def _record(
    stage, pre, sol, frozen, beta, notes, n_iter, info, *, n_mc, seed, t0, method, side_info
):
    """The record of a fixed point: errors, standard errors, replicon, flags and messages."""
    params, samples, r, fp = stage.params, stage.samples, sol.evaluation.prox, sol.fixed_point
    m, q, v = sol.x
    m_hat, q_hat, v_hat = sol.per_sample.mean(axis=0)
    (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
        params, pre, samples, m, q, r.chi, stage.zs_tr, stage.z_tr, beta
    )
    se: dict = dict(ft_test_error_se=E_se, ft_train_error_se=L_se, forgetting_error_se=F_se)
    precision_info: dict = {}
    se_note = ""
    if stage.control_variate and samples.blocks > 1:
        try:
            se, precision_info = _observable_se(stage, pre, sol, (E_se, L_se, F_se), beta)
        except OutOfDomain as err:  # a single block's conjugates leave the domain
            se_note = f"; block standard errors unavailable ({err})"
            warn(ConvergenceWarning, f"finetune at {params}: standard errors unavailable: {err}")
    rep = finetune_replicon(params.alpha_ft, v, r.hessian)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"fine-tuning replicon (78) = {rep.value:.3g} >= 1 at {params}: the replica-symmetric "
            "prediction need not describe the minimisers",
        )
    decided, notes_message = notes
    message = fp.message + se_note + notes_message
    if r.n_failed:
        message += f"; {r.n_failed} proximal samples above tolerance"
    return Observables(
        params=params,
        source="theory",
        ft_test_error=E,
        ft_train_error=L,
        forgetting_error=F,
        overlap=abs(m) / math.sqrt(q * Q0_TEACHER_W),
        **frozen,
        q0=Q0_TEACHER_W,
        q=q,
        m=abs(m),
        v=v,
        q_hat=q_hat,
        m_hat=m_hat,
        v_hat=v_hat,
        converged=fp.converged and r.n_failed == 0 and decided,
        n_iter=n_iter,
        residual=fp.residual,
        message=message,
        ft_replicon=rep.value,
        ft_replicon_stable=rep.stable,
        n_mc=n_mc,
        seed=seed,
        wall_time=time.perf_counter() - t0,
        **se,
        info={
            "prox_failed": r.n_failed,
            "prox_disagree": r.n_disagree,
            "method": method,
            "n_samples": len(samples.chi_star),
            **info,
            **precision_info,
            **side_info,
        },
    )


def _informed(x) -> bool:
    """An informed fixed point: |m| > 1e-4 and overlap |m|/√q > 1e-2 (else it is m = 0)."""
    m, q, _ = x
    return abs(m) > 1e-4 and q > 0 and abs(m) / math.sqrt(q) > 1e-2


def _observable_se(stage: FinetuneStage, pre, sol, test_se, beta):
    r"""Standard errors of m, q, o_w, ℰ', ℰ'' (and ℒ') by the delta method: Cov(x̂) from
    :func:`hdlora.theory.driver.map_covariance`; the test errors' gradients in (m, q) by central
    differences on the test samples."""
    params, samples, chi = stage.params, stage.samples, sol.evaluation.prox.chi
    fc = driver.map_covariance(stage, sol)
    m, q, v = sol.x
    q0 = Q0_TEACHER_W
    n = len(samples.chi_star)  # the gradient of a smooth function: the first n test points
    small = dataclasses.replace(
        samples, **{f"test_{k}": getattr(samples, f"test_{k}")[:n] for k in TEST_FIELDS}
    )

    def errors(y):
        mm, qq = y
        (E, _), _, (F, _) = finetune_errors(
            params, pre, small, mm, qq, chi, stage.zs_tr, stage.z_tr, beta
        )
        return np.array([E, F])

    grads = gradient(errors, np.array([m, q]))  # (2 errors, 2)
    cov_mq = fc.cov[:2, :2]
    E_se, L_se, F_se = test_se
    g_ow = np.array([1 / math.sqrt(q * q0), -m / (2 * q * math.sqrt(q * q0)), 0.0])
    se = dict(
        m_se=float(math.sqrt(max(fc.cov[0, 0], 0.0))),
        q_se=float(math.sqrt(max(fc.cov[1, 1], 0.0))),
        overlap_se=propagate(g_ow, fc.cov),
        ft_test_error_se=propagate(grads[0], cov_mq, E_se),
        forgetting_error_se=propagate(grads[1], cov_mq, F_se),
        ft_train_error_se=L_se,
    )
    info = {"jacobian_spectral_radius": fc.spectral_radius, "v_se": float(fc.se()[2])}
    shares = variance_shares(np.append(grads[0], 0.0), fc, E_se)  # ℰ' does not depend on v
    for name, share in zip(("m_hat", "q_hat", "v_hat", "test"), shares, strict=True):
        info[f"ft_test_error_var_share_{name}"] = float(share)
    return se, info
