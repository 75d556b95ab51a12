"""The objectives (2)–(3) against a direct numpy evaluation written from eqs. (1), (6), (34).

The reference (tests/direct.py) builds everything from the raw draws (X, ξ, W*, w*) with
explicit matrices:

    S = P^{-1/2} W Wᵀ + w wᵀ,   A_μ = D⁻¹ X_μ S X_μᵀ,   ŷ_μ = σ(A_μ − E_X A) X_μ     (eq. 1)
    y_μ = σ(A*_μ − E_X A* + ξ_μ) X_μ with S* = P0^{-1/2} W* W*ᵀ (+ w* w*ᵀ for 𝒫')     (eq. 6)
    objective = Σ_μ D⁻¹‖ŷ_μ − y_μ‖²_F + λ‖W‖²_F   (eq. 2),   + λ'‖w‖²   (eq. 3)

with E_X A = δ_ab D⁻¹ Tr S (population, eq. 34) or the mean of A over the set (empirical, the
literal reading of eq. 1), σ the row-wise softmax or x ↦ x/T. Sizes are chosen with P ≠ P0 ≠ D
so that every normalisation shows.
"""

import direct
import numpy as np
import pytest
import torch

from hdlora.model.data import draw_teacher, finetune_set, generators, pretrain_set
from hdlora.model.losses import finetune_objective, frozen_preactivation, pretrain_objective
from hdlora.params import Params
from hdlora.simulation import Experiment

CASES = [(act, c) for act in ("softmax", "linear") for c in ("population", "empirical")]
D = 10
BASE = Params(T=3, kappa0=0.5, kappa=1.5, Delta=0.6, alpha=0.3, alpha_ft=4.0, lam=0.7, lam_ft=0.9)


def _loss(X, S, y, act, centering):
    """Σ_μ D⁻¹‖σ(A_μ − E_X A) X_μ − y_μ‖²_F."""
    return direct.sequence_errors(direct.outputs(X, S, act, centering), y).sum()


def _targets(X, xi, S_star, act, centering):
    return direct.outputs(X, S_star, act, centering, noise=xi)


def _setup(act, centering, seed=0):
    params = BASE.replace(activation=act)
    g = generators(seed)
    teacher = draw_teacher(D, params, g["teacher"])
    pre = pretrain_set(teacher, params, 40, g["pretrain"], centering)
    ft = finetune_set(teacher, params, 30, g["finetune"], centering)
    Ws, ws = teacher.W_star.numpy(), teacher.w_star.numpy()
    return params, pre, ft, direct.gram_S(Ws), direct.gram_S(Ws, ws)


@pytest.mark.parametrize("act,centering", CASES)
def test_pretrain_objective_is_eq2_plus_ridge(act, centering):
    params, pre, _, S_star, _ = _setup(act, centering)
    X, xi = pre.X.numpy(), pre.xi.numpy()
    y = _targets(X, xi, S_star, act, centering)
    assert np.allclose(pre.outputs().numpy(), y, rtol=1e-12, atol=1e-12)
    P = params.sizes(D).P
    assert P != D and P != params.sizes(D).P0
    W = np.random.default_rng(1).standard_normal((D, P))
    ref = _loss(X, W @ W.T / np.sqrt(P), y, act, centering) + params.lam * (W * W).sum()
    lib = pretrain_objective(torch.from_numpy(W), pre, params, centering)
    assert float(lib) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("act,centering", CASES)
def test_finetune_objective_is_eq3_plus_ridge(act, centering):
    params, _, ft, _, S_ft = _setup(act, centering)
    X, xi = ft.X.numpy(), ft.xi.numpy()
    y = _targets(X, xi, S_ft, act, centering)
    assert np.allclose(ft.outputs().numpy(), y, rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(2)
    P = params.sizes(D).P
    W_hat = rng.standard_normal((D, P))
    w = 1.3 * rng.standard_normal(D)  # ‖w‖²/D = O(1): the LoRA part moves the centring
    S = W_hat @ W_hat.T / np.sqrt(P) + np.outer(w, w)
    ref = _loss(X, S, y, act, centering) + params.lam_ft * (w @ w)
    Wt = torch.from_numpy(W_hat)
    lib = finetune_objective(
        torch.from_numpy(w), frozen_preactivation(ft.X, Wt), Wt, ft, params, centering
    )
    assert float(lib) == pytest.approx(ref, rel=1e-12)


def _fd_grad_norm(f, x, h=1e-5, n_dirs=4):
    """max over random unit directions v of |f(x + hv) − f(x − hv)|/(2h) (numpy, central)."""
    rng = np.random.default_rng(7)
    out = 0.0
    for _ in range(n_dirs):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        out = max(out, abs(f(x + h * v) - f(x - h * v)) / (2 * h))
    return out


@pytest.mark.parametrize("centering", ["population", "empirical"])
def test_simulator_minimisers_are_stationary_points_of_the_direct_objectives(centering):
    """The L-BFGS fits of :class:`Experiment` zero the gradient of (2) + λ‖W‖² and (3) + λ'‖w‖²
    as written above (not merely of the library's own objective).

    At a fit with max|∂f| = g, a unit directional derivative is at most g√n (n parameters); the
    same derivative 5 % away from the minimiser sets the scale that a wrong objective reaches."""
    params = BASE.replace(alpha=0.4)
    exp = Experiment(params, 8, seed=3, device="cpu", centering=centering)
    X, xi = exp.train.X.numpy(), exp.train.xi.numpy()
    Ws, ws = exp.teacher.W_star.numpy(), exp.teacher.w_star.numpy()
    S_star = Ws @ Ws.T / np.sqrt(Ws.shape[1])
    y = _targets(X, xi, S_star, "softmax", centering)
    P = exp.sizes.P

    def obj_pre(W):
        return _loss(X, W @ W.T / np.sqrt(P), y, "softmax", centering) + params.lam * (W * W).sum()

    fit = exp.pretrain(progress=False)
    assert fit.converged
    W_hat = fit.x.numpy()
    bound = fit.grad_max * np.sqrt(W_hat.size) + 1e-8  # + the O(h²) error of the differences
    assert _fd_grad_norm(obj_pre, W_hat) <= bound < 1e-2 * _fd_grad_norm(obj_pre, 1.05 * W_hat)

    Xf, xif = exp.ft.X.numpy(), exp.ft.xi.numpy()
    yf = _targets(Xf, xif, S_star + np.outer(ws, ws), "softmax", centering)
    S_hat = W_hat @ W_hat.T / np.sqrt(P)

    def obj_ft(w):
        return _loss(Xf, S_hat + np.outer(w, w), yf, "softmax", centering) + params.lam_ft * (w @ w)

    fit_ft = exp.finetune(fit.x, progress=False)
    assert fit_ft.converged
    w_hat = fit_ft.x.numpy()
    bound = fit_ft.grad_max * np.sqrt(w_hat.size) + 1e-8
    assert _fd_grad_norm(obj_ft, w_hat) <= bound < 1e-2 * _fd_grad_norm(obj_ft, 1.05 * w_hat)
