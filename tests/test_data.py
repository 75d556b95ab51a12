"""The data of eq. (6) and the centring of eq. (34): noise laws of both tasks (e = 0 and e = 1),
recovered from the stored targets with the teacher written out in the test, and the finite-D
moments of the teacher's pre-activation (eq. 13). Monte-Carlo comparisons at 4 standard errors."""

import numpy as np
import pytest
import torch

from hdlora.model.data import (
    draw_noise,
    draw_teacher,
    finetune_set,
    generators,
    pretrain_set,
)
from hdlora.params import Params

Z4 = 4.0  # every Monte-Carlo comparison of this file is at 4 standard errors


def _noise_variance(Delta, T):
    """The law 𝒫_Δ of eq. (6): ξ_ab ~ N(0, Δ/(2 − δ_ab)) for a ≤ b."""
    return Delta / (2 - np.eye(T))


def _centred_teacher(X, S):
    """D⁻¹ X S Xᵀ − δ_ab D⁻¹ Tr S (eqs. 6, 34) for X (n, T, D), numpy."""
    D, T = X.shape[-1], X.shape[1]
    return np.einsum("nai,ij,nbj->nab", X, S, X) / D - np.trace(S) / D * np.eye(T)


def _assert_gaussian_moments(x, var, n_sigma=Z4):
    """Entrywise mean 0 and E x² = var (n, T, T) at n_sigma standard errors (Gaussian x)."""
    n = x.shape[0]
    assert np.all(np.abs(x.mean(axis=0)) < n_sigma * np.sqrt(var / n))
    assert np.all(np.abs((x * x).mean(axis=0) - var) < n_sigma * var * np.sqrt(2 / n))


def test_draw_noise_is_symmetric_with_the_variances_of_eq6():
    Delta, T, n = 0.7, 4, 200_000
    xi = draw_noise(n, T, Delta, torch.Generator().manual_seed(1)).numpy()
    assert np.array_equal(xi, np.swapaxes(xi, 1, 2))
    _assert_gaussian_moments(xi, _noise_variance(Delta, T))
    # independent entries above the diagonal
    assert abs(np.corrcoef(xi[:, 0, 1], xi[:, 0, 2])[0, 1]) < Z4 / np.sqrt(n)
    assert abs(np.corrcoef(xi[:, 0, 0], xi[:, 1, 1])[0, 1]) < Z4 / np.sqrt(n)


@pytest.mark.parametrize("reuse", [False, True])
def test_the_noise_in_both_tasks_follows_eq6(reuse):
    """ξ = z* − (D⁻¹XS*Xᵀ − E_X) and ξ' = z*' − (D⁻¹X'(S* + w*w*ᵀ)X'ᵀ − E_X'), recovered from the
    stored targets with the teacher written out, have the law 𝒫_Δ; for e = 1, ξ' is the noise of
    the reused pre-training sequence (the same realisation), for e = 0 an independent draw."""
    params = Params(T=3, kappa0=0.5, Delta=0.7, alpha=2.0, alpha_ft=1.0, reuse=reuse)
    D, n = 8, 60_000
    g = generators(11)
    teacher = draw_teacher(D, params, g["teacher"])
    pre = pretrain_set(teacher, params, n, g["pretrain"])
    ft = finetune_set(teacher, params, n, g["finetune"], reuse_from=pre if reuse else None)
    Ws, ws = teacher.W_star.numpy(), teacher.w_star.numpy()
    S_star = Ws @ Ws.T / np.sqrt(Ws.shape[1])
    xi = pre.z_star.numpy() - _centred_teacher(pre.X.numpy(), S_star)
    xi_ft = ft.z_star.numpy() - _centred_teacher(ft.X.numpy(), S_star + np.outer(ws, ws))
    assert np.allclose(xi, pre.xi.numpy(), atol=1e-10)
    assert np.allclose(xi_ft, ft.xi.numpy(), atol=1e-10)
    var = _noise_variance(params.Delta, params.T)
    for x in (xi, xi_ft):
        assert np.allclose(x, np.swapaxes(x, 1, 2), atol=1e-10)
        _assert_gaussian_moments(x, var)
    corr = np.corrcoef(xi[:, 0, 1], xi_ft[:, 0, 1])[0, 1]
    if reuse:
        assert np.allclose(xi_ft, xi, atol=1e-10)
    else:
        assert abs(corr) < Z4 / np.sqrt(n)


def _teacher_and_sets(params, D, seed=0, n=4000, centering="population"):
    g = generators(seed)
    teacher = draw_teacher(D, params, g["teacher"])
    pre = pretrain_set(teacher, params, n, g["pretrain"], centering)
    return teacher, pre, g


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_population_centring_centres_the_teacher_and_matches_eq13(task):
    """At finite D and fixed teacher, z*_ab has mean 0 (eq. 34 centres exactly) and variance
    (1 + δ_ab)(D⁻² Tr S² + Δ/2) (eq. 13 before D → ∞), S = S* or S* + w*w*ᵀ. z* is not
    Gaussian at finite D, so the standard errors are the empirical ones."""
    params = Params(T=3, Delta=0.5, kappa0=0.5, alpha=1.0, alpha_ft=1.0)
    D, n = 20, 40_000
    g = generators(2)
    teacher = draw_teacher(D, params, g["teacher"])
    Ws, ws = teacher.W_star.numpy(), teacher.w_star.numpy()
    S = Ws @ Ws.T / np.sqrt(Ws.shape[1])
    if task == "pretrain":
        data = pretrain_set(teacher, params, n, g["pretrain"])
    else:
        data = finetune_set(teacher, params, n, g["finetune"])
        S = S + np.outer(ws, ws)
    z = data.z_star.numpy()
    var = (1 + np.eye(3)) * (np.trace(S @ S) / D**2 + params.Delta / 2)
    se_mean = z.std(axis=0) / np.sqrt(n)
    se_var = (z * z).std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(z.mean(axis=0)) < Z4 * se_mean)
    assert np.all(np.abs((z * z).mean(axis=0) - var) < Z4 * se_var)


def test_empirical_centring_subtracts_the_set_mean():
    params = Params(T=3)
    _, pre, _ = _teacher_and_sets(params, D=30, n=500, centering="empirical")
    A = pre.z_star - pre.xi  # the centred teacher pre-activation without noise
    assert torch.allclose(A.mean(dim=0), torch.zeros(3, 3, dtype=A.dtype), atol=1e-10)


def test_reuse_takes_inputs_and_noise_of_pretraining_sequences():
    params = Params(T=2, reuse=True, kappa0=0.5, alpha=0.2)
    teacher, pre, g = _teacher_and_sets(params, D=30, n=180)
    ft = finetune_set(teacher, params, 90, g["finetune"], reuse_from=pre)
    assert torch.equal(ft.X, pre.X[:90]) and torch.equal(ft.xi, pre.xi[:90])
    # the targets use the fine-tuning teacher: z*' = z* + χ*χ*ᵀ − q0 I
    chi = ft.chi_star
    expected = (
        pre.z_star[:90]
        + chi[:, :, None] * chi[:, None, :]
        - teacher.q0 * torch.eye(2, dtype=torch.float64)
    )
    assert torch.allclose(ft.z_star, expected, atol=1e-10)
    fresh = finetune_set(teacher, params.replace(reuse=False), 90, g["finetune"])
    assert not torch.equal(fresh.X, pre.X[:90])


def test_outputs_are_sigma_of_zstar_times_x():
    params = Params(activation="linear")
    _, pre, _ = _teacher_and_sets(params, D=20, n=10)
    y = pre.outputs()
    assert torch.allclose(y, (pre.z_star / params.T) @ pre.X)


def test_same_seed_same_data_and_different_seed_different_data():
    params = Params()
    a = _teacher_and_sets(params, D=20, n=50, seed=3)[1]
    b = _teacher_and_sets(params, D=20, n=50, seed=3)[1]
    c = _teacher_and_sets(params, D=20, n=50, seed=4)[1]
    assert torch.equal(a.X, b.X) and torch.equal(a.z_star, b.z_star)
    assert not torch.equal(a.X, c.X)
