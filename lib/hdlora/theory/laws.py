r"""The Gaussian laws of the pre-activations (Results 1–3) with their Monte-Carlo samples and
errors: the one place where (z*, z̃) of 𝒬 and (χ*, χ̃) of eq. (62) are drawn.

* 𝒬 (Result 1, eqs. 13, 47): for each a ≤ b, with A0 = Q0 + Δ/2, B = Q − M²/A0, s = 1 + δ_ab
  and standard Gaussians g, ζ:  z*_ab = √(s A0) g_ab,  z̃_ab = √s (M/√A0 g_ab + √B ζ_ab).
  On a fresh sequence the student's pre-activation is z = z̃ (test law).
* ℛ (Result 2, eq. 17): on a training sequence z = Prox(z*, z̃) (:mod:`hdlora.theory.prox`).
* Fine-tuning (eq. 62): χ* ~ N(0, q0 I_T), χ̃ = (m/q0) χ* + √(q − m²/q0) ζ.

Arrays: entries a ≤ b have shape (n, L), L = T(T+1)/2; matrices (n, T, T); χ (n, T).

Sampling (``method``):

* ``"mc"``: i.i.d. Gaussians from ``numpy.random.default_rng`` (the original path);
* ``"rqmc"``: randomised quasi-Monte Carlo. ``blocks`` = 8 independent randomisations
  (Owen-scrambled Sobol points, :class:`scipy.stats.qmc.Sobol`) of 2^k points each, mapped to
  standard Gaussians by Φ⁻¹; n_mc is rounded to the nearest 8·2^k. The blocks are independent
  and identically distributed, so the spread of the block means gives an honest standard error
  (:mod:`hdlora.theory.precision`), while within a block the points are balanced (the smooth
  part of every integrand is integrated at a rate close to 1/n).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from hdlora.params import Params
from hdlora.theory import rowops
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.symmetric import multiplicity, n_entries, to_matrix

#: q0 = D⁻¹‖w*‖² → 1 (eq. 9)
Q0_TEACHER_W = 1.0


#: the sampling methods; "rqmc" is the solvers' default, "mc" the original i.i.d. path
METHODS: tuple[str, ...] = ("rqmc", "mc")
#: independent randomisations of the RQMC points (the batches of the standard errors)
RQMC_BLOCKS = 8
#: with "rqmc", the test averages (errors on fresh samples: no proximal, cheap) use this many
#: times more points than the training channel
TEST_FACTOR = 8


def _check_n_mc(n_mc) -> int:
    if isinstance(n_mc, bool) or int(n_mc) != n_mc or n_mc < 2:
        raise ValueError(f"n_mc must be an integer >= 2, got n_mc={n_mc!r}")
    return int(n_mc)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    return method


def rqmc_size(n_mc: int, blocks: int = RQMC_BLOCKS) -> int:
    """The RQMC sample size: ``blocks`` · 2^k nearest (in log) to n_mc, at least ``blocks`` · 16."""
    k = max(4, round(math.log2(max(_check_n_mc(n_mc), 2) / blocks)))
    return blocks * 2**k


def gaussian_rqmc(n_mc: int, dim: int, seed_seq, blocks: int = RQMC_BLOCKS) -> np.ndarray:
    """(rqmc_size(n_mc), dim) standard Gaussians: ``blocks`` independent Owen-scrambled Sobol
    sets of 2^k points (rows block·2^k … (block+1)·2^k − 1), mapped by Φ⁻¹."""
    n = rqmc_size(n_mc, blocks)
    k = int(round(math.log2(n // blocks)))
    children = np.random.SeedSequence(seed_seq).spawn(blocks)
    out = np.empty((n, dim))
    for b, child in enumerate(children):
        u = qmc.Sobol(dim, scramble=True, seed=np.random.default_rng(child)).random_base2(k)
        # Φ⁻¹ by scipy.special.ndtri: what scipy.stats.norm.ppf computes, without its checks
        out[b * 2**k : (b + 1) * 2**k] = ndtri(np.clip(u, 1e-16, 1 - 1e-16))
    return out


def split_columns(X: np.ndarray, widths) -> list[np.ndarray]:
    """Consecutive column groups of X with the given widths (contiguous copies)."""
    edges = np.cumsum([0, *widths])
    return [np.ascontiguousarray(X[:, a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@dataclass
class PretrainSamples:
    """Common random numbers of one pre-training solve: g, ζ of shape (n, L); ``blocks``
    independent batches of equal size (contiguous rows)."""

    g: np.ndarray
    zeta: np.ndarray
    blocks: int = 1
    test_g: np.ndarray | None = None
    test_zeta: np.ndarray | None = None

    @classmethod
    def draw(cls, n_mc: int, T: int, seed: int, method: str = "mc") -> PretrainSamples:
        """i.i.d. (``method="mc"``) or RQMC (``"rqmc"``, 8 blocks, plus an independent test set
        ``TEST_FACTOR`` times larger for the test error (55)) samples of the seed."""
        n = _check_n_mc(n_mc)
        L = n_entries(T)
        if check_method(method) == "rqmc":
            X = gaussian_rqmc(n, 2 * L, [int(seed), 0, 7])
            Xt = gaussian_rqmc(TEST_FACTOR * rqmc_size(n), 2 * L, [int(seed), 0, 8])
            return cls(*split_columns(X, (L, L)), RQMC_BLOCKS, *split_columns(Xt, (L, L)))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
        return cls(rng.standard_normal((n, L)), rng.standard_normal((n, L)))

    def subset(self, n_blocks: int) -> PretrainSamples:
        """The first ``n_blocks`` blocks (a smaller independent sample of the same law)."""
        k = len(self.g) // self.blocks * n_blocks
        return PretrainSamples(self.g[:k], self.zeta[:k], n_blocks)


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
    blocks: int = 1

    @classmethod
    def draw(cls, n_mc: int, T: int, seed: int, method: str = "mc") -> FinetuneSamples:
        """i.i.d. (``method="mc"``) or RQMC (``"rqmc"``: the training and the test fields are
        two independent 2T + 2L dimensional RQMC sets of 8 blocks each, the test set
        ``TEST_FACTOR`` times larger)."""
        n = _check_n_mc(n_mc)
        L = n_entries(T)
        shapes = dict(chi_star=T, zeta=T, g=L, zeta_pre=L)
        if check_method(method) == "rqmc":
            widths = tuple(shapes.values())
            train = split_columns(gaussian_rqmc(n, sum(widths), [int(seed), 1, 7]), widths)
            test_n = TEST_FACTOR * n
            test = split_columns(gaussian_rqmc(test_n, sum(widths), [int(seed), 1, 8]), widths)
            fields = dict(zip(shapes, train, strict=True))
            fields |= {f"test_{k}": x for k, x in zip(shapes, test, strict=True)}
            return cls(**fields, blocks=RQMC_BLOCKS)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        shapes |= {f"test_{k}": v for k, v in list(shapes.items())}
        return cls(**{name: rng.standard_normal((n, k)) for name, k in shapes.items()})

    def subset(self, n_blocks: int) -> FinetuneSamples:
        """The first ``n_blocks`` blocks of every field."""
        k = len(self.chi_star) // self.blocks * n_blocks
        fields = {f.name: getattr(self, f.name)[:k] for f in dataclasses.fields(self)[:-1]}
        return FinetuneSamples(**fields, blocks=n_blocks)


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


def mean_se(x: np.ndarray, blocks: int = 1) -> tuple[float, float]:
    """Sample mean and its standard error: from the per-sample spread (i.i.d., ``blocks`` = 1)
    or from the spread of the means of ``blocks`` independent randomisations (RQMC)."""
    if blocks > 1:
        means = x[: len(x) // blocks * blocks].reshape(blocks, -1).mean(axis=1)
        return float(x.mean()), float(means.std(ddof=1) / math.sqrt(blocks))
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def pretrain_errors(z_star, z, params: Params, blocks: int = 1) -> tuple[float, float]:
    """Per-sample ‖σ(z) − σ(z*)‖²_F for entries (n, L) of z*, z: mean and standard error
    (eq. 55 with z = z̃ under 𝒬; the train error with z = Prox under ℛ)."""
    sigma = rowops.sigma(params.activation)
    T = params.T
    e = ((sigma(to_matrix(z, T)) - sigma(to_matrix(z_star, T))) ** 2).sum(axis=(-1, -2))
    return mean_se(e, blocks)


def finetune_errors(
    params: Params, pre, samples: FinetuneSamples, m, q, chi_train, zs_tr, z_tr, beta=1.0
):
    """ℰ' (73), ℰ'' (84) on fresh samples and ℒ' on the training channel: (mean, se) each.

    ``beta``: the frozen map is recalibrated, Ŵ → √β Ŵ (eq. 26), so its fresh-sample field is
    β z̃; the training fields ``z_tr`` are passed already scaled. Returns ((ℰ', se), (ℒ', se),
    (ℰ'', se))."""
    sigma = rowops.sigma(params.activation)
    T = params.T
    eye = np.eye(T)
    q0 = Q0_TEACHER_W
    zs, z, _ = side_fields(
        pre, params.Delta, T, samples.test_g, samples.test_zeta_pre, params.activation, reuse=False
    )
    z = beta * z
    cs = samples.test_chi_star * math.sqrt(q0)
    c = chi_tilde(cs, samples.test_zeta, m, q, q0)

    def outer(x):
        return x[:, :, None] * x[:, None, :]

    student = sigma(z + outer(c) - q * eye)
    test = ((student - sigma(zs + outer(cs) - q0 * eye)) ** 2).sum(axis=(1, 2))
    forget = ((student - sigma(zs)) ** 2).sum(axis=(1, 2))
    train_target = sigma(zs_tr + outer(samples.chi_star * math.sqrt(q0)) - q0 * eye)
    train = ((sigma(z_tr + outer(chi_train) - q * eye) - train_target) ** 2).sum(axis=(1, 2))
    b = samples.blocks
    return mean_se(test, b), mean_se(train, b), mean_se(forget, b)


def active_selection(
    pre, Delta, T, activation, n: int, blocks: int, rho: float, seed: int, beta: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Algorithm 1 on the law 𝒬 (App. D): the training fields of active fine-tuning.

    For each of the ``blocks`` independent blocks of n/blocks samples, draw ⌈(n/blocks)/ρ⌉
    i.i.d. candidates (g, ζ) of eq. (47), compute the frozen student field z = β z̃ (e = 0: a
    fresh sequence's pre-activation) and keep the n/blocks candidates with the smallest score
    ‖σ(z) − σ(0)‖²_F, as Algorithm 1 labels the N' = ρ N̄' best of N̄' sequences. The blocks
    stay independent and identically distributed, so their spread still gives standard errors.
    Returns (g, ζ) of shape (n, L) (the selected rows, in their drawing order)."""
    if not (0 < rho <= 1):
        raise ValueError(f"rho must satisfy 0 < rho <= 1, got rho={rho!r}")
    L = n_entries(T)
    nb = n // blocks
    n_cand = math.ceil(nb / rho)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, 9]))
    sigma = rowops.sigma(activation)
    s0 = sigma(np.zeros((1, T, T)))
    gs, zs = [], []
    for _ in range(blocks):
        g = rng.standard_normal((n_cand, L))
        ze = rng.standard_normal((n_cand, L))
        _, zt, _ = channel_fields(pre.Q, pre.M, pre.Q0, Delta, PretrainSamples(g, ze), T)
        score = ((sigma(beta * to_matrix(zt, T)) - s0) ** 2).sum(axis=(1, 2))
        keep = np.sort(np.argpartition(score, nb - 1)[:nb]) if nb < n_cand else np.arange(nb)
        gs.append(g[keep])
        zs.append(ze[keep])
    return np.concatenate(gs), np.concatenate(zs)


def noise_variance(z_star: np.ndarray, z: np.ndarray) -> float:
    r"""The measured effective noise of a set of fields (n, T, T): the mean over samples and
    entries a ≤ b of (z − z*)²_ab/(1 + δ_ab), whose expectation is Δ_eff of eq. (25) under 𝒬
    (eq. 28 under the active selection)."""
    d2 = (z - z_star) ** 2
    T = d2.shape[-1]
    trace = np.trace(d2, axis1=-2, axis2=-1)
    upper = (d2.sum(axis=(-1, -2)) - trace) / 2
    return float(((upper + trace / 2) / (T * (T + 1) / 2)).mean())
