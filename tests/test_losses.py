"""Gradients of the objectives (2)–(3) against central finite differences."""

import pytest
import torch

from hdlora.model.data import draw_teacher, finetune_set, generators, pretrain_set
from hdlora.model.losses import finetune_objective, frozen_preactivation, pretrain_objective
from hdlora.params import Params

CASES = [(act, c) for act in ("softmax", "linear") for c in ("population", "empirical")]


def _directional_check(f, x, n_dirs=3, h=1e-5):
    x = x.detach().clone().requires_grad_(True)
    fx = f(x)
    (g,) = torch.autograd.grad(fx, x)
    gen = torch.Generator().manual_seed(0)
    for _ in range(n_dirs):
        v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        with torch.no_grad():
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        exact = (g * v).sum()
        assert abs(float(fd - exact)) <= 1e-6 * max(1.0, abs(float(exact))), (
            float(fd),
            float(exact),
        )


@pytest.mark.parametrize("act,centering", CASES)
def test_pretrain_gradient_matches_finite_differences(act, centering):
    params = Params(activation=act, T=3, lam=0.2)
    g = generators(0)
    teacher = draw_teacher(12, params, g["teacher"])
    data = pretrain_set(teacher, params, 40, g["pretrain"], centering)
    W = torch.randn(12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _directional_check(lambda W_: pretrain_objective(W_, data, params, centering), W)


@pytest.mark.parametrize("act,centering", CASES)
def test_finetune_gradient_matches_finite_differences(act, centering):
    params = Params(activation=act, T=3, lam_ft=0.3)
    g = generators(0)
    teacher = draw_teacher(12, params, g["teacher"])
    data = finetune_set(teacher, params, 36, g["finetune"], centering)
    W_hat = torch.randn(12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    A = frozen_preactivation(data.X, W_hat)
    w = torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _directional_check(lambda w_: finetune_objective(w_, A, W_hat, data, params, centering), w)


def test_objective_is_the_sequence_loss_of_eq2():
    """The Gram-matrix form equals Σ D⁻¹‖σ(z)X − y‖²_F computed on the sequences."""
    params = Params(T=3, lam=0.0 + 1e-9)
    g = generators(5)
    teacher = draw_teacher(10, params, g["teacher"])
    data = pretrain_set(teacher, params, 30, g["pretrain"])
    W = torch.randn(10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S = W @ W.T / 10**0.5
    A = data.X @ S @ data.X.transpose(-1, -2) / 10
    z = A - torch.trace(S) / 10 * torch.eye(3, dtype=torch.float64)
    y_hat = z.softmax(-1) @ data.X
    direct = ((y_hat - data.outputs()) ** 2).sum() / 10 + params.lam * (W * W).sum()
    assert torch.allclose(pretrain_objective(W, data, params), direct, rtol=1e-12)
