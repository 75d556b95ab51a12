r"""The pre-training state evolution in closed form for σ(x) = x/T (``method="exact"``).

For the linear activation the proximal (41) is linear and every expectation of the output
channel (49)–(51) is a Gaussian moment (App. C), so the fixed point of eqs. (52)–(54) needs no
Monte Carlo: :func:`pretrain_exact_linear` iterates the deterministic map to 1e-10 and is the
reference that the sampled paths of :func:`hdlora.theory.pretrain.pretrain` are tested against.
"""

from __future__ import annotations

import math
import time

import numpy as np

from hdlora.params import Params
from hdlora.theory import spectral
from hdlora.theory.fixed_point import solve
from hdlora.theory.pretrain import _replicon, _zero_record, fixed_point_record, input_channel
from hdlora.theory.symmetric import multiplicity, n_entries


def linear_conjugates(Q, M, V, Q0, params: Params) -> tuple[float, float, float]:
    r"""Eqs. (49)–(51) in closed form for σ(x) = x/T.

    The proximal is linear, h = k z* + (1 − k) z̃ with k = cV/(cV + 1), c = 4/T² (App. C), so
    with d = (h − z̃)/√s = k((√A0 − M/√A0) g − √B ζ) every expectation is a Gaussian moment:
    E[d (g/√A0 − Mζ/(A0√B))] = k, E[d ζ] = −k√B, E[d²] = k²(A0 − 2M + Q), summed over the
    L = T(T+1)/2 entries:

        M̂ = V̂ = 2αLk/V,   Q̂ = 2αL k² (A0 − 2M + Q)/V².
    """
    T, L = params.T, n_entries(params.T)
    A0 = Q0 + params.Delta / 2
    k = 4.0 * V / (4.0 * V + T * T)
    a = 2 * params.alpha * L
    return a * k / V, a * k * k * (A0 - 2 * M + Q) / V**2, a * k / V


def linear_errors(Q, M, V, Q0, params: Params) -> tuple[float, float]:
    r"""ℰ (55) and ℒ for σ(x) = x/T: with ‖H‖²_F = Σ_{a≤b}(2 − δ_ab) h²_ab and
    E(z̃ − z*)²_ab = s_ab (A0 − 2M + Q), ℰ = (T + 1)/T · (A0 − 2M + Q), and ℒ = (1 − k)² ℰ
    (h − z* = (1 − k)(z̃ − z*); k = 0 at V = 0, the zero predictor)."""
    T = params.T
    A0 = Q0 + params.Delta / 2
    E = (T + 1) / T * (A0 - 2 * M + Q)
    k = 4.0 * V / (4.0 * V + T * T) if V > 0 else 0.0
    return E, (1 - k) ** 2 * E


def threshold_lambda_linear(params: Params) -> float:
    r"""λ_c for σ(x) = x/T: at V → 0, k ≈ cV (c = 4/T²), so M̂ = V̂ → a c and
    Q̂ → a c² A0 at the origin (a = 2αL), and λ_c = M̂ · edge(μ_η) / (2√κ) with η = √Q̂/M̂."""
    T = params.T
    A0 = params.Q0 + params.Delta / 2
    a = 2 * params.alpha * n_entries(T)
    c = 4.0 / T**2
    eta0 = math.sqrt(a * c * c * A0) / (a * c)
    return a * c * spectral.support(eta0, params.kappa0)[-1][1] / (2 * math.sqrt(params.kappa))


def pretrain_exact_linear(params, n_mc, seed, tol, max_iter, x0, damping, progress):
    """:func:`hdlora.theory.pretrain.pretrain` with ``method="exact"``: eqs. (49)–(54) with
    :func:`linear_conjugates` (the arguments are those of ``pretrain``)."""
    t0 = time.perf_counter()
    if params.activation != "linear":
        raise ValueError('method="exact" needs activation="linear" (the proximal is linear)')
    Q0, T = params.Q0, params.T
    A0 = Q0 + params.Delta / 2
    lam_c = threshold_lambda_linear(params)
    if math.isinf(params.lam) or params.lam >= lam_c:
        E, _ = linear_errors(0.0, 0.0, 0.0, Q0, params)
        msg = (
            "lam = inf: W = 0"
            if math.isinf(params.lam)
            else (f"zero predictor: lam = {params.lam:g} >= lam_c = {lam_c:.6g}")
        )
        info = {"lambda_c": lam_c, "method": "exact"}
        return _zero_record(params, E, 0.0, msg, t0, n_mc=n_mc, seed=seed, info=info)

    def G(x):
        return np.array(input_channel(*linear_conjugates(*x, Q0, params), params))

    def project(x):
        Q, M, V = x
        return x if (Q > 0 and V > 0 and M * M < Q * A0) else None

    x = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    fp = solve(
        G,
        x,
        tol=min(tol, 1e-10),
        max_iter=max(max_iter, 500),
        damping=damping,
        project=project,
        progress=progress,
        desc=f"pretrain SE exact lam={params.lam:g}",
    )
    Q, M, V = fp.x
    M_hat, Q_hat, V_hat = linear_conjugates(Q, M, V, Q0, params)
    E, L = linear_errors(Q, M, V, Q0, params)
    s = multiplicity(T)
    k2 = 2.0 - (s == 2)
    hess = np.diag(2 * k2 / T**2 + 1.0 / (V * s))[None]  # −∇²Ψ, the same for every sample
    rep = _replicon(params, V, M_hat, Q_hat, V_hat, hess)
    return fixed_point_record(
        params,
        (Q, M, V),
        (M_hat, Q_hat, V_hat),
        rep,
        errors=dict(
            test_error=E, train_error=L, test_error_se=0.0, train_error_se=0.0, Q_se=0.0, M_se=0.0
        ),
        status=dict(
            converged=fp.converged, n_iter=fp.n_iter, residual=fp.residual, message=fp.message
        ),
        t0=t0,
        n_mc=n_mc,
        seed=seed,
        info={
            "lambda_c": lam_c,
            "method": "exact",
            "replicon_paper_normalisation": rep.paper_value,
        },
    )
