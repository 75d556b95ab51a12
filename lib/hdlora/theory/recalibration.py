r"""The recalibrated pre-training Ŵ → √β Ŵ (eq. 26, App. E): its errors ℰ(β), ℒ(β)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory import noise
from hdlora.theory.laws import PretrainSamples, channel_fields, check_method, pretrain_errors
from hdlora.theory.prox import pretrain_prox


def recalibrated(
    params: Params,
    pre: Observables,
    beta: float | Sequence[float],
    n_mc: int = 30000,
    seed: int = 0,
    *,
    method: str = "rqmc",
) -> Observables | list[Observables]:
    r"""The pre-training record of the recalibrated map Ŵ → √β Ŵ (eq. 26, App. E).

    The fields scale, z → β z, so Q → β²Q, M → βM and, with (z*, z̃) ~ 𝒬 and h = Prox(z*, z̃)
    the training field (Result 2, at the fixed point's V),

        ℰ(β) = E‖σ(β z̃) − σ(z*)‖²_F  (eq. 55),   ℒ(β) = E‖σ(β h) − σ(z*)‖²_F.

    For σ(x) = x/T both are Gaussian moments: ℰ(β) = (T+1)/T · (A0 − 2βM + β²Q), minimal at
    β* = M/Q, and ℒ(β) with h = k z* + (1 − k) z̃ (exact, ``method="exact"``). Otherwise fresh
    samples of the seed (``method`` as in :func:`pretrain`); the standard errors are those of the
    sample averages at the given (Q, M, V) (β and the fixed point held fixed). ``beta=1``
    reproduces ``pre``'s errors within their standard errors. Returns ``pre`` with test_error,
    train_error, Q, M (and their standard errors, scaled) replaced, ``beta`` and ``beta_star``
    set, and ``info["test_error_unscaled"]``.

    ``beta`` may be a sequence: then a list of records, one per β, computed from one draw of
    the samples and one proximal (the same numbers as one call per β; common random numbers
    along the β curve).
    """
    scalar = np.ndim(beta) == 0
    betas = [beta] if scalar else list(beta)
    for b in betas:
        if isinstance(b, bool | np.bool_) or not (np.isreal(b) and math.isfinite(b) and b > 0):
            raise ValueError(f"beta must be finite numbers > 0, got beta={b!r}")
    Q, M, V = pre.Q, pre.M, pre.V
    beta_star = noise.beta_star(Q, M, pre.Q0)
    T, A0 = params.T, pre.Q0 + params.Delta / 2
    errors = []  # (E, E_se, L, L_se) per β
    if method == "exact" or (params.activation == "linear" and Q == 0):
        if params.activation != "linear":
            raise ValueError('method="exact" needs activation="linear" (the proximal is linear)')
        k = 4.0 * V / (4.0 * V + T * T) if V > 0 else 0.0
        c = (T + 1) / T
        for b in betas:
            E = c * (A0 - 2 * b * M + b * b * Q)
            a, bb = b * k - 1.0, b * (1.0 - k)  # β h − z* = a z* + bb z̃
            L = c * (a * a * A0 + 2 * a * bb * M + bb * bb * Q)
            errors.append((E, 0.0, L, 0.0))
    else:
        samples = PretrainSamples.draw(n_mc, T, seed, check_method(method))
        test = (
            PretrainSamples(samples.test_g, samples.test_zeta)
            if samples.test_g is not None
            else samples
        )
        # the fields of (β²Q, βM) are β times those of (Q, M): one draw serves every β
        zs_test, zt_test, _ = channel_fields(Q, M, pre.Q0, params.Delta, test, T)
        zs, zt, _ = channel_fields(Q, M, pre.Q0, params.Delta, samples, T)
        h = pretrain_prox(zs, zt, V, T, params.activation).h if V > 0 else zt
        for b in betas:
            E, E_se = pretrain_errors(zs_test, b * zt_test, params, samples.blocks)
            L, L_se = pretrain_errors(zs, b * h, params, samples.blocks)
            errors.append((E, E_se, L, L_se))
    records = [
        pre.replace(
            test_error=E,
            test_error_se=E_se,
            train_error=L,
            train_error_se=L_se,
            Q=b * b * Q,
            Q_se=b * b * pre.Q_se,
            M=b * M,
            M_se=b * pre.M_se,
            beta=float(b),
            beta_star=beta_star,
            info={**pre.info, "test_error_unscaled": pre.test_error},
        )
        for b, (E, E_se, L, L_se) in zip(betas, errors, strict=True)
    ]
    return records[0] if scalar else records
