import numpy as np
import torch

from hdlora.model.data import (
    draw_noise,
    draw_teacher,
    finetune_set,
    generators,
    pretrain_set,
)
from hdlora.params import Params


def test_noise_is_symmetric_with_the_right_variances():
    Delta, T, n = 0.7, 4, 200_000
    xi = draw_noise(n, T, Delta, torch.Generator().manual_seed(1)).numpy()
    assert np.array_equal(xi, np.swapaxes(xi, 1, 2))
    var = xi.var(axis=0)
    expected = np.where(np.eye(T, dtype=bool), Delta, Delta / 2)  # N(0, Δ/(2 − δ_ab))
    se = expected * np.sqrt(2 / n)
    assert np.all(np.abs(var - expected) < 5 * se)
    # independent entries above the diagonal
    assert abs(np.corrcoef(xi[:, 0, 1], xi[:, 0, 2])[0, 1]) < 5 / np.sqrt(n)


def _teacher_and_sets(params, D, seed=0, n=4000, centering="population"):
    g = generators(seed)
    teacher = draw_teacher(D, params, g["teacher"])
    pre = pretrain_set(teacher, params, n, g["pretrain"], centering)
    return teacher, pre, g


def test_population_centring_centres_the_teacher_and_matches_eq13():
    params = Params(T=3, Delta=0.5, kappa0=1.0)
    teacher, pre, _ = _teacher_and_sets(params, D=60, n=20000)
    z = pre.z_star.numpy()
    n = z.shape[0]
    W = teacher.W_star
    Q0 = float((W.T @ W).square().sum()) / (W.shape[1] * 60**2)
    # E_X centring: mean of z* is zero within Monte-Carlo error
    var = np.where(np.eye(3, dtype=bool), 2, 1) * (params.Delta / 2 + Q0)  # eq. (13)
    assert np.all(np.abs(z.mean(axis=0)) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(axis=0) - var) < 6 * var * np.sqrt(2 / n) * 1.5)


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
