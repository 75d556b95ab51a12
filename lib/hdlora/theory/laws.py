r"""The Gaussian laws of the pre-activations (Results 1–3) with their Monte-Carlo samples and
errors: the one place where (z*, z̃) of 𝒬 and (χ*, χ̃) of eq. (62) are drawn.

* 𝒬 (Result 1, eqs. 13, 47): for each a ≤ b, with A0 = Q0 + Δ/2, B = Q − M²/A0, s = 1 + δ_ab
  and standard Gaussians g, ζ:  z*_ab = √(s A0) g_ab,  z̃_ab = √s (M/√A0 g_ab + √B ζ_ab).
  On a fresh sequence the student's pre-activation is z = z̃ (test law).
* ℛ (Result 2, eq. 17): on a training sequence z = Prox(z*, z̃) (:mod:`hdlora.theory.prox`).
* Fine-tuning (eq. 62): χ* ~ N(0, q0 I_T), χ̃ = (m/q0) χ* + √(q − m²/q0) ζ.

Arrays: entries a ≤ b have shape (n, L), L = T(T+1)/2; matrices (n, T, T); χ (n, T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hdlora.model.activations import activation as activation_fn
from hdlora.params import Params
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.symmetric import multiplicity, n_entries, to_matrix

#: q0 = D⁻¹‖w*‖² → 1 (eq. 9)
Q0_TEACHER_W = 1.0


def _check_n_mc(n_mc) -> int:
    if isinstance(n_mc, bool) or int(n_mc) != n_mc or n_mc < 2:
        raise ValueError(f"n_mc must be an integer >= 2, got n_mc={n_mc!r}")
    return int(n_mc)


@dataclass
class PretrainSamples:
    """Common random numbers of one pre-training solve: g, ζ of shape (n_mc, L)."""

    g: np.ndarray
    zeta: np.ndarray

    @classmethod
    def draw(cls, n_mc: int, T: int, seed: int) -> PretrainSamples:
        n = _check_n_mc(n_mc)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
        L = n_entries(T)
        return cls(rng.standard_normal((n, L)), rng.standard_normal((n, L)))


@dataclass
class FinetuneSamples:
    """Common random numbers of one fine-tuning solve: training χ*, ζ (n, T) and the pre-training
    fields' g, ζ (n, L); the same for the test draws."""

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
        n = _check_n_mc(n_mc)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        L = n_entries(T)
        shapes = dict(chi_star=T, zeta=T, g=L, zeta_pre=L)
        shapes |= {f"test_{k}": v for k, v in list(shapes.items())}
        return cls(**{name: rng.standard_normal((n, k)) for name, k in shapes.items()})


def channel_fields(Q, M, Q0, Delta, samples: PretrainSamples, T):
    """(z*, z̃) of eq. (47) under 𝒬, shape (n_mc, L) each; also √B."""
    s = multiplicity(T)
    A0 = Q0 + Delta / 2
    B = max(Q - M * M / A0, 0.0)
    z_star = np.sqrt(s * A0) * samples.g
    z_tilde = np.sqrt(s) * (M / math.sqrt(A0) * samples.g + math.sqrt(B) * samples.zeta)
    return z_star, z_tilde, math.sqrt(B)


def side_fields(pre, Delta, T, g, zeta, activation, reuse):
    """(z*, z) as (n, T, T) matrices: law 𝒬 of eq. (13), or ℛ of eq. (17) when ``reuse``.

    ``pre`` has the attributes Q0, Q, M, V of a pre-training. Returns (z*, z, info)."""
    z_star, z_tilde, _ = channel_fields(pre.Q, pre.M, pre.Q0, Delta, PretrainSamples(g, zeta), T)
    z = z_tilde
    info = {}
    if reuse and pre.V > 0:
        r = pretrain_prox(z_star, z_tilde, pre.V, T, activation)
        z = r.h
        info = {"pretrain_prox_failed": r.n_failed}
    return to_matrix(z_star, T), to_matrix(z, T), info


def chi_tilde(chi_star, zeta, m, q, q0=Q0_TEACHER_W):
    """χ̃ = (m/q0) χ* + √(q − m²/q0) ζ of eq. (62), for χ* already of variance q0."""
    return (m / q0) * chi_star + math.sqrt(max(q - m * m / q0, 0.0)) * zeta


def mean_se(x: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error."""
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def pretrain_errors(z_star, z, params: Params) -> tuple[float, float]:
    """Per-sample ‖σ(z) − σ(z*)‖²_F for entries (n, L) of z*, z: mean and standard error
    (eq. 55 with z = z̃ under 𝒬; the train error with z = Prox under ℛ)."""
    sigma = activation_fn(params.activation)
    T = params.T
    e = ((sigma(to_matrix(z, T)) - sigma(to_matrix(z_star, T))) ** 2).sum(axis=(-1, -2))
    return mean_se(e)


def finetune_errors(params: Params, pre, samples: FinetuneSamples, m, q, chi_train, zs_tr, z_tr):
    """ℰ' (73), ℰ'' (84) on fresh samples and ℒ' on the training channel: (mean, se) each.

    Returns ((ℰ', se), (ℒ', se), (ℰ'', se))."""
    sigma = activation_fn(params.activation)
    T = params.T
    eye = np.eye(T)
    q0 = Q0_TEACHER_W
    zs, z, _ = side_fields(
        pre, params.Delta, T, samples.test_g, samples.test_zeta_pre, params.activation, reuse=False
    )
    cs = samples.test_chi_star * math.sqrt(q0)
    c = chi_tilde(cs, samples.test_zeta, m, q, q0)

    def outer(x):
        return x[:, :, None] * x[:, None, :]

    student = sigma(z + outer(c) - q * eye)
    test = ((student - sigma(zs + outer(cs) - q0 * eye)) ** 2).sum(axis=(1, 2))
    forget = ((student - sigma(zs)) ** 2).sum(axis=(1, 2))
    train_target = sigma(zs_tr + outer(samples.chi_star * math.sqrt(q0)) - q0 * eye)
    train = ((sigma(z_tr + outer(chi_train) - q * eye) - train_target) ** 2).sum(axis=(1, 2))
    return mean_se(test), mean_se(train), mean_se(forget)
