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

import numpy as np

from hdlora.diagnostics import ConvergenceWarning, RepliconWarning, warn
from hdlora.observables import Observables
from hdlora.params import EffectivePretraining, Params
from hdlora.theory import noise
from hdlora.theory.fixed_point import OutOfDomain, solve
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
from hdlora.theory.precision import (
    block_means,
    fixed_point_covariance,
    gradient,
    jacobian,
    propagate,
)
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.replicon import finetune_replicon

#: the test fields of FinetuneSamples (without the ``test_`` prefix)
TEST_FIELDS = ("chi_star", "zeta", "g", "zeta_pre")
#: the uninformed fixed point is solved on the coarse block only when it loses the selection by
#: more than this many standard errors of its free entropy (eq. 22) there
SELECT_MARGIN = 10.0
#: evaluations allowed to a fixed-point round that takes every proximal start at each evaluation
EVERY_START_ITER = 40


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
    pre = pretrain_result
    T = params.T
    q0 = Q0_TEACHER_W
    if isinstance(beta, bool) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got beta={beta!r}")
    if rho is not None:
        if isinstance(rho, bool) or not (0 < rho <= 1):
            raise ValueError(f"rho must satisfy 0 < rho <= 1 (or None), got rho={rho!r}")
        if params.reuse:
            raise ValueError("rho (active fine-tuning, Algorithm 1) needs fresh sequences, e = 0")
    samples = FinetuneSamples.draw(n_mc, T, seed, method)
    if rho is not None:
        g_sel, zeta_sel = active_selection(
            pre,
            params.Delta,
            T,
            params.activation,
            len(samples.g),
            samples.blocks,
            rho,
            seed,
            beta,
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
        Delta_eff=params.Delta / 2 + pre.Q0 - 2 * M_used + Q_used,
        rho=math.nan if rho is None else float(rho),
        selection="uniform" if rho is None else "active",
    )
    side_info = {**side_info, "Delta_eff_train": noise_variance(zs_tr, z_tr)}
    chi_star = samples.chi_star * math.sqrt(q0)
    ap = params.alpha_ft

    if math.isinf(params.lam_ft):  # no LoRA: ŵ = 0, the frozen baseline of eq. (79)
        (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
            params, pre, samples, 0.0, 0.0, np.zeros_like(chi_star), zs_tr, z_tr, beta
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
            q0=q0,
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
            n_mc=int(n_mc),
            seed=int(seed),
            wall_time=time.perf_counter() - t0,
            info={"method": method, **side_info},
        )
    cv = method == "rqmc"

    def make_channel(sub: FinetuneSamples, zs_sub, z_sub):
        """The output channel (70)–(72) on the samples ``sub``: per-sample conjugates."""
        cs = sub.chi_star * math.sqrt(q0)

        def channel(m, q, v, warm, both_signs=True):
            ct = chi_tilde(cs, sub.zeta, m, q, q0)
            r = finetune_prox(
                cs,
                ct,
                zs_sub,
                z_sub,
                q,
                v,
                params.activation,
                q0=q0,
                warm=warm,
                both_signs=both_signs,
            )
            if cv:
                # control variate: E[χ*ᵀχ̃] = m T q0 exactly (eq. 62), so only χ*ᵀ(χ − χ̃) is
                # averaged; the i.i.d. term χ*ᵀχ̃ carried ~90 % of the variance of m̂
                mh = ap / v * ((cs * (r.chi - ct)).sum(axis=1) + m * T * q0 - m / v * r.trace_C)
            else:
                mh = ap / v * ((cs * r.chi).sum(axis=1) - m / v * r.trace_C)
            qh = ap / v**2 * ((r.chi - ct) ** 2).sum(axis=1)
            vh = ap * T / v - ap / v**2 * r.trace_C - 2 * ap * r.dq_psi
            return np.stack([mh, qh, vh], axis=1), r

        return channel

    def input_channel(conj):
        m_hat, q_hat, v_hat = conj
        denom = 2 * params.lam_ft + v_hat
        if not denom > 0:
            raise OutOfDomain(f"2λ' + v̂ = {denom} <= 0")
        v_new = 1.0 / denom
        return np.array([m_hat * v_new, (m_hat**2 + q_hat) * v_new**2, v_new])

    def make_map(channel, cache, every_start=False):
        def G(x):
            # warm start between iterations; every start (±χ̃) at the first and final evaluation
            # (and at every evaluation with ``every_start``)
            per, r = channel(*x, cache["chi"], both_signs=every_start)
            cache["chi"] = r.chi
            return input_channel(per.mean(axis=0))

        return G

    def project(x):
        m, q, v = x
        return x if (q > 0 and v > 0 and m * m < q * q0) else None

    x_start = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    if project(x_start) is None or x_start[0] <= 0:
        raise ValueError(f"x0 = (m, q, v) must satisfy m > 0, q > m², v > 0; got {tuple(x_start)}")

    def pinned(G):
        """The map restricted to m = 0 (the uninformed fixed point: exact by w → −w)."""

        def Gm(x):
            out = G(np.array([0.0, x[1], x[2]]))
            out[0] = 0.0
            return out

        return Gm

    def run(x, pin, coarse_only=False):
        """Coarse then full fixed point from x (m pinned to 0 when ``pin``); with
        ``coarse_only`` the coarse fixed point, evaluated on its block from every start."""
        wrap = pinned if pin else (lambda G: G)
        kind = "uninformed" if pin else "informed"
        n_iter = coarse_iter = 0
        if cv and samples.blocks > 1:
            # coarse stage: one RQMC block (1/8 of the cost per iteration) to tolerance 1e-3,
            # then the full sample from there (few expensive iterations)
            sub = samples.subset(1)
            k = len(sub.chi_star)
            ch = make_channel(sub, zs_tr[:k], z_tr[:k])
            fpc = solve(
                wrap(make_map(ch, {"chi": None})),
                x,
                tol=max(tol, 1e-3),
                max_iter=max_iter,
                damping=damping,
                project=project,
                progress=progress,
                desc=f"finetune SE ({kind}, coarse) lam_ft={params.lam_ft:g}",
                warn_failure=False,
            )
            coarse_iter = fpc.n_iter
            if coarse_only:
                per, r = ch(*fpc.x, None)
                if pin:
                    per = per.copy()
                    per[:, 0] = 0.0
                phi = free_entropy(fpc.x, per.mean(axis=0), r.objective)
                phi_se = float(np.std(r.objective) / math.sqrt(k))
                return dict(
                    x=fpc.x,
                    fp=fpc,
                    per=per,
                    r=r,
                    n_iter=0,
                    coarse=coarse_iter,
                    phi=phi,
                    phi_se=phi_se,
                    coarse_only=True,
                )
            if fpc.converged and (pin or fpc.x[0] > 0):
                x = fpc.x
        channel = make_channel(samples, zs_tr, z_tr)
        cache: dict = {"chi": None}
        every, fell_back, n_rounds = False, False, 0
        while n_rounds < 3:
            # a round after the first means that the warm-started proximals had left samples in
            # worse local minima, and the warm-started map depends on the path of the iterates
            # (measured: 178 iterations at a noise floor ~1e-3 on an uninformed point); such a
            # round takes the best of all starts at every evaluation (3× the cost per
            # evaluation, a map of x alone), within EVERY_START_ITER evaluations
            G = wrap(make_map(channel, cache, every_start=every))
            warm_before = cache["chi"]
            budget = max_iter - n_iter
            fp = solve(
                G,
                x,
                tol=tol,
                max_iter=min(budget, EVERY_START_ITER) if every else budget,
                damping=damping,
                project=project,
                progress=progress,
                desc=f"finetune SE ({kind}) lam_ft={params.lam_ft:g}",
                warn_failure=not every,
            )
            n_iter += fp.n_iter
            if every and not fp.converged and n_iter < max_iter:
                # the best-of-starts map has no fixed point within reach: samples keep
                # switching between the proximal's minima (measured at replicon 1.26). Back to
                # the warm-started rounds, as before, from the same point and proximals
                every, fell_back = False, True
                cache["chi"] = warm_before
                continue
            n_rounds += 1
            x = fp.x
            # final evaluation from every start (±χ̃ and the warm start): if another start found
            # a better proximal, the fixed point is solved again from there
            per, r = channel(*x, cache["chi"])
            changed = float(np.abs(r.chi - cache["chi"]).max())
            cache["chi"] = r.chi
            if not fp.converged or changed < 1e-8 or n_iter >= max_iter:
                break
            every = not fell_back
        if pin:  # m̂ = 0 at m = 0 in expectation (its sample mean is noise)
            per = per.copy()
            per[:, 0] = 0.0
        phi = free_entropy(x, per.mean(axis=0), r.objective)
        phi_se = float(np.std(r.objective) / math.sqrt(len(r.objective)))
        return dict(
            x=x,
            fp=fp,
            per=per,
            r=r,
            n_iter=n_iter,
            coarse=coarse_iter,
            phi=phi,
            phi_se=phi_se,
            coarse_only=False,
            fell_back=fell_back,
        )

    def free_entropy(x, conj, objective):
        """φ of eq. (22) at (m, q, v; m̂, q̂, v̂): E max ψ = −E F(prox) (F = −ψ)."""
        m, q, v = x
        m_hat, q_hat, v_hat = conj
        return float(
            -m * m_hat / ap
            + (q * v_hat - v * q_hat) / (2 * ap)
            + (m_hat**2 + q_hat) / (2 * ap * (2 * params.lam_ft + v_hat))
            - objective.mean()
        )

    found = {"informed": run(x_start, pin=False)}
    retried = False
    if not found["informed"]["fp"].converged and x0 is not None:
        # a continuation start (a sweep's neighbour) can fail where the default start does not
        # (measured: Figure 2, α' = 3, Δ_eff = 10/3, replicon 1.26): retry once from there
        retry = run(np.array((0.5, 0.5, 1.0)), pin=False)
        retry["n_iter"] += found["informed"]["n_iter"]
        found["informed"], retried = retry, True
    informed = found["informed"]
    if select:
        x_pin = np.array([0.0, x_start[1], x_start[2]])
        uninformed = None
        if cv and samples.blocks > 1 and informed["fp"].converged and _informed(informed["x"]):
            # the uninformed fixed point matters only through its free entropy: solved on the
            # coarse block, it is kept when it loses the selection by far more than its Monte-
            # Carlo error (SELECT_MARGIN standard errors of E F(prox) on the block), and solved
            # on the full sample otherwise
            uninformed = run(x_pin, pin=True, coarse_only=True)
            margin = SELECT_MARGIN * uninformed["phi_se"]
            if not (uninformed["fp"].converged and informed["phi"] - uninformed["phi"] > margin):
                uninformed = None
        found["uninformed"] = uninformed or run(x_pin, pin=True)
    distinct = {
        k: f
        for k, f in found.items()
        if k == "uninformed" or (f["fp"].converged and _informed(f["x"]))
    }
    if select and len(distinct) == 2 and informed["fp"].converged:
        chosen = max(distinct, key=lambda k: distinct[k]["phi"])
    elif select and not (informed["fp"].converged and "informed" in distinct):
        chosen = "uninformed"  # the informed iteration failed or collapsed onto m = 0
    else:
        chosen = "informed"
    best = found[chosen]
    x, fp, per, r = best["x"], best["fp"], best["per"], best["r"]
    n_iter = sum(f["n_iter"] for f in found.values())
    coarse_iter = sum(f["coarse"] for f in found.values())
    selection_info = {
        "fixed_point": chosen,
        "n_fixed_points": len(distinct),
        "free_entropy": best["phi"],
        "predicted_objective": -best["phi"],
        **{f"free_entropy_{k}": f["phi"] for k, f in found.items()},
        **{f"free_entropy_{k}_se": f["phi_se"] for k, f in found.items()},
        "uninformed_coarse_only": bool(select and found["uninformed"]["coarse_only"]),
    }
    m_hat, q_hat, v_hat = per.mean(axis=0)
    m, q, v = x
    (E, E_se), (L, L_se), (F, F_se) = finetune_errors(
        params, pre, samples, m, q, r.chi, zs_tr, z_tr, beta
    )
    se: dict = dict(ft_test_error_se=E_se, ft_train_error_se=L_se, forgetting_error_se=F_se)
    precision_info: dict = {}
    se_note = ""
    if cv and samples.blocks > 1:
        try:
            se, precision_info = _fixed_point_se(
                params,
                pre,
                samples,
                zs_tr,
                z_tr,
                x,
                per,
                r,
                make_channel,
                make_map,
                input_channel,
                (E_se, L_se, F_se),
                beta,
            )
        except OutOfDomain as err:  # a single block's conjugates leave the domain
            se_note = f"; block standard errors unavailable ({err})"
            warn(ConvergenceWarning, f"finetune at {params}: standard errors unavailable: {err}")
    rep = finetune_replicon(ap, v, r.hessian)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"fine-tuning replicon (78) = {rep.value:.3g} >= 1 at {params}: the replica-symmetric "
            "prediction need not describe the minimisers",
        )
    m_abs = abs(m)
    converged = fp.converged and r.n_failed == 0
    message = fp.message + se_note
    if select and chosen == "uninformed" and _informed(informed["x"]) is False:
        message += "; the iteration from m > 0 did not reach an informed fixed point"
    if (
        select
        and chosen == "uninformed"
        and not informed["fp"].converged
        and _informed(informed["x"])
    ):
        # the informed iteration stopped away from m = 0 without converging: the selection
        # cannot compare the free entropies, so the point is not a converged prediction
        converged = False
        message += "; the informed fixed point did not converge (the selection is undecided)"
    if retried:
        message += "; informed fixed point retried from the default start"
    if best.get("fell_back"):
        message += (
            "; the best-of-all-starts proximal map did not converge (samples switching between "
            "local minima): warm-started fixed point"
        )
    if r.n_failed:
        message += f"; {r.n_failed} proximal samples above tolerance"
    return Observables(
        params=params,
        source="theory",
        ft_test_error=E,
        ft_train_error=L,
        forgetting_error=F,
        overlap=m_abs / math.sqrt(q * q0),
        **frozen,
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
        **se,
        info={
            "prox_failed": r.n_failed,
            "prox_disagree": r.n_disagree,
            "method": method,
            "n_samples": len(samples.chi_star),
            "coarse_iter": coarse_iter,
            **selection_info,
            **precision_info,
            **side_info,
        },
    )


def _informed(x) -> bool:
    """An informed fixed point: |m| > 1e-4 and overlap |m|/√q > 1e-2 (else it is m = 0)."""
    m, q, _ = x
    return abs(m) > 1e-4 and q > 0 and abs(m) / math.sqrt(q) > 1e-2


def _fixed_point_se(
    params,
    pre,
    samples,
    zs_tr,
    z_tr,
    x,
    per,
    r,
    make_channel,
    make_map,
    input_channel,
    test_se,
    beta,
):
    r"""Standard errors of m, q, o_w, ℰ', ℰ'' (and ℒ') by the delta method of
    :mod:`hdlora.theory.precision`: the block means of the conjugates (70)–(72) give Cov(G_n);
    J = ∂G/∂(m, q, v) by forward differences on two blocks (common random numbers, warm
    started at the fixed point's proximal); the test errors' gradients in (m, q) by central
    differences on the test samples."""
    K = samples.blocks
    G_blocks = np.array([input_channel(c) for c in block_means(per, K)])
    sub = samples.subset(2)
    k = len(sub.chi_star)
    channel = make_channel(sub, zs_tr[:k], z_tr[:k])
    J = jacobian(make_map(channel, {"chi": r.chi[:k].copy()}), x)
    fc = fixed_point_covariance(J, G_blocks)
    m, q, v = x
    q0 = Q0_TEACHER_W

    n = len(samples.chi_star)  # the gradient of a smooth function: the first n test points
    small = dataclasses.replace(
        samples, **{f"test_{k}": getattr(samples, f"test_{k}")[:n] for k in TEST_FIELDS}
    )

    def errors(y):
        mm, qq = y
        (E, _), _, (F, _) = finetune_errors(params, pre, small, mm, qq, r.chi, zs_tr, z_tr, beta)
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
    return se, info
