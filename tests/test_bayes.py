import math

import numpy as np
import pytest
from scipy.special import logsumexp

from hdlora import Params
from hdlora.theory import bayes

P = Params(T=3, kappa0=1.0, Delta=0.5, alpha=0.1)


def test_mmse_limits():
    # no information (Q̂ → 0): the mmse is the variance of μ0, 1
    assert bayes.mmse(1e-3, 1.0) == pytest.approx(1.0, abs=2e-3)
    # much information: mmse ≈ 1/Q̂ (full-rank prior, κ0 = 1: every direction is noisy)
    assert bayes.mmse(1e4, 2.0) * 1e4 == pytest.approx(1.0, rel=2e-2)
    with pytest.raises(ValueError, match="Q_hat"):
        bayes.mmse(0.0, 1.0)


@pytest.mark.parametrize("Q_hat", [0.5, 2.0, 8.0])
def test_mmse_of_a_gaussian_prior(Q_hat):
    """κ0 → ∞: S*/√D − √κ0 I tends to a GOE of variance 1 (the Marchenko–Pastur law becomes a
    semicircle), a Gaussian prior whose denoising mmse with noise variance 1/Q̂ is the scalar
    one, 1/(1 + Q̂). Eq. (87) must reproduce it (this fixes the constant 4π²/3)."""
    assert bayes.mmse(Q_hat, 1e4) == pytest.approx(1 / (1 + Q_hat), rel=1e-4)


def test_overlap_is_in_range_and_increasing_in_alpha():
    Qs = [bayes.overlap(P.replace(alpha=a))[0] for a in (0.01, 0.05, 0.1, 0.3)]
    assert all(0 <= q <= P.Q0 for q in Qs)
    assert all(a < b for a, b in zip(Qs, Qs[1:], strict=False))
    # α → 0: the BO estimator only knows the mean of the spectrum, Q_BO → κ0
    assert bayes.overlap(P.replace(alpha=1e-3))[0] == pytest.approx(P.kappa0, abs=2e-2)


def _softmax_channel_fisher(T, V, n=4000, seed=0, e=1e-4, chunk=250):
    """E Σ_{a≤b} s_ab (∂_{ω_ab} log Z_out)² by Monte Carlo, for the noiseless softmax channel of a
    symmetric z with entries z_ab ~ N(ω_ab, s_ab V): the row-wise softmax of a symmetric matrix
    determines it up to c 11ᵀ, so Z_out(ω) = ∫ dc Π_{a≤b} N(z_ab + c; ω_ab, s_ab V)
    (quadrature in c, ∂_ω by central differences). Returns (mean, standard error)."""
    iu = np.triu_indices(T)
    s = 1.0 + (iu[0] == iu[1])
    L = len(s)
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((n, L))
    z = omega + np.sqrt(V * s) * rng.standard_normal((n, L))
    c = np.linspace(-10, 10, 201) * np.sqrt(V)
    shifts = np.concatenate([np.eye(L), -np.eye(L)]) * e
    out = np.empty(n)
    for i in range(0, n, chunk):
        mean = omega[i : i + chunk, None, None, :] + shifts[None, :, None, :]
        d = z[i : i + chunk, None, None, :] + c[None, None, :, None] - mean
        log_Z = logsumexp(-(d * d / (2 * V * s)).sum(-1), axis=-1)  # (m, 2L)
        g = (log_Z[:, :L] - log_Z[:, L:]) / (2 * e)
        out[i : i + chunk] = (s * g * g).sum(-1)
    return out.mean(), out.std(ddof=1) / np.sqrt(n)


def test_fixed_point_equations_hold():
    """Eq. (89) against the likelihood of the softmax channel itself: Q̂ = 2α E‖∂_ω log Z_out‖²
    (the normalisation of Q̂ in eq. 50) at the variance V_BO = Q0 + Δ/2 − Q_BO of z* given the BO
    estimate; then eq. (87) at the returned root."""
    Q, Q_hat, _, _ = bayes.overlap(P)
    fisher, se = _softmax_channel_fisher(P.T, P.Q0 + P.Delta / 2 - Q)
    assert Q_hat == pytest.approx(2 * P.alpha * fisher, abs=4 * 2 * P.alpha * se)
    assert Q == pytest.approx(P.Q0 - bayes.mmse(Q_hat, P.kappa0), abs=1e-10)  # eq. (87)


@pytest.mark.parametrize("kappa0", [1.0, 0.5])
def test_perfect_recovery_threshold_without_noise(kappa0):
    """α_PR counts degrees of freedom: (κ̄ − κ̄²/2) D² parameters of a rank-κ̄D symmetric matrix
    against (T² + T − 2)/2 informative entries per sequence (the T(T+1)/2 entries of z less the
    direction 11ᵀ). The solution of (87), (89) with Δ = 0 recovers S* exactly just above it and
    not just below (−3 %, +5 %: closer above, the quadrature near Q0 becomes slow)."""
    p = P.replace(Delta=0.0, kappa0=kappa0)
    a_pr = bayes.perfect_recovery_threshold(p)
    below = bayes.pretrain(p.replace(alpha=0.97 * a_pr), n_mc=2000)
    above = bayes.pretrain(p.replace(alpha=1.05 * a_pr), n_mc=2000)
    assert not below.perfect_recovery and below.mmse > 1e-4
    assert above.perfect_recovery and above.mmse == 0 and above.test_error < 1e-20  # rounding


def test_noise_keeps_the_mmse_positive_and_the_error_decreases():
    errs = [bayes.pretrain(P.replace(alpha=a), n_mc=20000) for a in (0.05, 0.2)]
    assert errs[0].mmse > errs[1].mmse > 0
    assert errs[0].test_error > errs[1].test_error


def test_linear_activation_is_not_covered():
    with pytest.raises(NotImplementedError, match="softmax"):
        bayes.pretrain(P.replace(activation="linear"))
    assert math.isfinite(bayes.perfect_recovery_threshold(P))


FT = Params(T=3, kappa0=1.0, Delta=0.5, alpha=0.1, alpha_ft=3.0)


def test_finetune_overlap_is_in_range_and_increasing():
    pre = bayes.pretrain(FT, n_mc=5000)
    qs = [
        bayes.finetune(FT.replace(alpha_ft=a), pre, n_out=300, n_inner=300, n_mc=5000).q
        for a in (0.3, 1.0, 3.0)
    ]
    assert all(0 <= q <= 1 for q in qs)
    assert qs[0] < qs[1] < qs[2]


def test_reused_sequences_recover_w_for_alpha_ft_at_least_one():
    r = bayes.finetune(FT.replace(reuse=True), n_mc=5000)
    assert r.q == 1.0 and r.overlap == 1.0
    with pytest.raises(NotImplementedError, match="alpha_ft"):
        bayes.finetune(FT.replace(reuse=True, alpha_ft=0.5), n_mc=5000)


def test_bayes_optimal_record_lies_below_the_trained_attention():
    from hdlora.theory import state_evolution

    bo = bayes.bayes_optimal(FT.replace(lam=0.1, lam_ft=0.5), n_mc=20000, n_out=300, n_inner=300)
    se = state_evolution(FT.replace(lam=0.1, lam_ft=0.5), n_mc=4000, progress=False)
    assert bo.source == "bayes" and bo.Q == bo.M and bo.q == bo.m
    assert bo.test_error < se.test_error and bo.ft_test_error < se.ft_test_error


def test_limits_alpha_ft_to_zero_and_delta_to_infinity():
    pre = bayes.pretrain(FT, n_mc=5000)
    tiny = bayes.finetune(FT.replace(alpha_ft=1e-3), pre, n_out=300, n_inner=300, n_mc=5000)
    assert tiny.q < 1e-2  # no fine-tuning data: no overlap with w*
    # Δ → ∞: the pre-training labels carry no information, Q_BO → κ0 (the spectrum's mean)
    assert bayes.overlap(P.replace(Delta=1e5))[0] == pytest.approx(P.kappa0, abs=1e-3)


def test_corrected_bo_beats_the_trained_lora_with_the_same_side_information():
    """Erratum in (95)–(96): only with the side-noise realisation in the data does the BO
    overlap dominate the trained LoRA given the BO pre-training as side information."""
    from hdlora.theory import EffectivePretraining
    from hdlora.theory import finetune as se_finetune

    pre = bayes.pretrain(FT, n_mc=5000)
    side = EffectivePretraining(Q0=pre.Q0, Q=pre.Q, M=pre.Q)
    trained = se_finetune(FT.replace(lam_ft=0.2), side, n_mc=6000, progress=False)
    corrected = bayes.finetune(FT, pre, n_out=600, n_inner=600, n_mc=5000)
    printed = bayes.finetune(FT, pre, n_out=600, n_inner=600, n_mc=5000, noise_in_data=False)
    assert corrected.overlap > trained.overlap > printed.overlap
