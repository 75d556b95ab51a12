import math

import direct
import numpy as np
import pytest
import torch

from hdlora import Params
from hdlora.diagnostics import ConvergenceWarning
from hdlora.simulation import Experiment, simulate

SMALL = Params(T=3, alpha=0.2, alpha_ft=3.0, lam=0.1, lam_ft=0.5)


def _row(obs):
    row = obs.to_dict()
    row.pop("wall_time")
    return row


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = _row(simulate(SMALL, 20, seed=7, progress=False))
    b = _row(simulate(SMALL, 20, seed=7, progress=False))
    c = _row(simulate(SMALL, 20, seed=8, progress=False))
    assert a == b
    assert a["test_error"] != c["test_error"]


def test_result_is_converged_and_consistent():
    exp = Experiment(SMALL, 24, seed=1, device="cpu")
    fit = exp.pretrain(progress=False)
    assert fit.converged and fit.grad_max <= 1e-6
    fit_ft = exp.finetune(fit.x, progress=False)
    obs = exp.observables(fit.x, fit_ft.x, {"pretrain": fit, "finetune": fit_ft})
    assert obs.converged and obs.source == "simulation" and obs.D == 24
    # the train error is the objective minus the penalty, per sample
    penalty = SMALL.lam * float((fit.x**2).sum())
    assert obs.train_error == pytest.approx((fit.objective - penalty) / exp.sizes.N, rel=1e-10)
    assert obs.m >= 0 and 0 <= obs.overlap <= 1
    assert obs.train_error < obs.test_error  # the train set is fit


def test_large_lambda_drives_W_to_zero():
    exp = Experiment(SMALL.replace(activation="linear"), 20, seed=2, device="cpu")
    norms = []
    for lam in (0.1, 1.0, 10.0, 1e3):
        fit = exp.pretrain(lam=lam, progress=False)
        norms.append(float(fit.x.norm()))
    assert all(a > b for a, b in zip(norms, norms[1:], strict=False))
    assert norms[-1] < 1e-3 * norms[0]
    zero = exp.pretrain(lam=math.inf)
    assert float(zero.x.abs().max()) == 0.0


def test_infinite_lambdas_are_the_baselines():
    obs = simulate(SMALL.replace(lam=math.inf, lam_ft=math.inf), 20, seed=0, progress=False)
    assert obs.Q == 0 and obs.M == 0 and obs.q == 0 and obs.overlap == 0
    # with W = w = 0 the fine-tuned model is the pre-trained one: E'' = E
    assert obs.forgetting_error == pytest.approx(obs.test_error, rel=1e-12)


def test_warm_start_and_non_convergence_is_reported():
    exp = Experiment(SMALL, 20, seed=3, device="cpu")
    fit = exp.pretrain(progress=False)
    warm = exp.pretrain(W0=fit.x, progress=False)
    assert warm.n_iter <= 2 and warm.objective == pytest.approx(fit.objective, rel=1e-10)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        short = exp.pretrain(max_iter=2, progress=False)
    assert not short.converged
    obs = exp.observables(short.x, torch.zeros(20, dtype=torch.float64), {"pretrain": short})
    assert obs.converged is False


def test_best_of_several_initialisations_keeps_the_lowest_objective():
    """n_init = 3 returns the fit of the best of the three starts, each run on its own. The runs
    are cut short (max_iter = 3) so that the starts end at clearly different objectives."""
    exp = Experiment(SMALL, 16, seed=4, device="cpu")
    shape = (16, exp.sizes.P)
    with pytest.warns(ConvergenceWarning):
        three = exp.pretrain(n_init=3, max_iter=3, progress=False)
        singles = [
            exp.pretrain(W0=exp._random_start("pretrain", k, shape), max_iter=3, progress=False)
            for k in range(3)
        ]
    objectives = [f.objective for f in singles]
    assert max(objectives) - min(objectives) > 1e-3 * abs(min(objectives))  # they differ
    best = singles[int(np.argmin(objectives))]
    assert three.objective == best.objective and torch.equal(three.x, best.x)
    assert three.n_evals == sum(f.n_evals for f in singles)


def test_observables_from_their_definitions():
    """Eqs. (4), (5), (8), (9), (84) and o_w evaluated with explicit matrices (tests/direct.py) on
    the experiment's test sets, for arbitrary weights, with P ≠ P0 so that every normalisation
    shows: Q0 = D⁻²Tr S*², Q = D⁻²Tr Ŝ², M = D⁻²Tr ŜS*, q0 = ‖w*‖²/D, q = ‖ŵ‖²/D, m = ŵᵀw*/D."""
    p = SMALL.replace(kappa0=0.5, kappa=1.5)
    D = 12
    exp = Experiment(p, D, seed=6, device="cpu", n_test=300)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((D, exp.sizes.P))
    w = rng.standard_normal(D)
    obs = exp.observables(torch.from_numpy(W), torch.from_numpy(w))
    Ws, ws = exp.teacher.W_star.numpy(), exp.teacher.w_star.numpy()
    S_star, S_hat = direct.gram_S(Ws), direct.gram_S(W)
    assert obs.Q0 == pytest.approx(np.trace(S_star @ S_star) / D**2, rel=1e-12)
    assert obs.Q == pytest.approx(np.trace(S_hat @ S_hat) / D**2, rel=1e-12)
    assert obs.M == pytest.approx(np.trace(S_hat @ S_star) / D**2, rel=1e-12)
    assert (obs.q0, obs.q, obs.m) == pytest.approx((ws @ ws / D, w @ w / D, w @ ws / D))
    cos = abs(w @ ws) / (np.linalg.norm(w) * np.linalg.norm(ws))
    assert obs.overlap == pytest.approx(cos, rel=1e-12)

    def error(data, S, S_target):
        """mean_μ D⁻¹‖ŷ_μ − y_μ‖²_F with y from the teacher S_target and the set's noise ξ."""
        X = data.X.numpy()
        y = direct.outputs(X, S_target, "softmax", noise=data.xi.numpy())
        return direct.sequence_errors(direct.outputs(X, S, "softmax"), y).mean()

    S_ft, S_star_ft = direct.gram_S(W, w), direct.gram_S(Ws, ws)
    assert obs.test_error == pytest.approx(error(exp.test, S_hat, S_star), rel=1e-12)
    assert obs.ft_test_error == pytest.approx(error(exp.test_ft, S_ft, S_star_ft), rel=1e-12)
    # ℰ'' (84): the fine-tuned attention on fresh pre-training samples
    assert obs.forgetting_error == pytest.approx(error(exp.test, S_ft, S_star), rel=1e-12)


def test_reuse_pipeline_runs():
    p = Params(T=2, kappa0=0.5, alpha=0.2, alpha_ft=3, lam=0.05, lam_ft=0.5, reuse=True)
    obs = simulate(p, 20, seed=0, progress=False)
    assert obs.converged and np.isfinite(obs.ft_test_error)


def test_result1_covariance_of_test_preactivations():
    """Eq. (13) at finite D: Cov(z*_ab, z_ab) = (1+δ_ab)[[Δ/2+Q0, M], [M, Q]] (exact moments)."""
    exp = Experiment(SMALL, 24, seed=5, device="cpu", n_test=40000)
    W = exp.pretrain(progress=False).x
    from hdlora.model.losses import pretrain_preactivation

    z = pretrain_preactivation(exp.test.X, W).numpy()
    zs = exp.test.z_star.numpy()
    op = exp.order_parameters(W, torch.zeros(24, dtype=torch.float64))
    n = z.shape[0]
    for a, b in ((0, 0), (0, 1), (1, 2)):
        s = 2 if a == b else 1
        cov = np.cov(zs[:, a, b], z[:, a, b])
        theory = s * np.array([[SMALL.Delta / 2 + op["Q0"], op["M"]], [op["M"], op["Q"]]])
        # standard error of a sample (co)variance, from the Gaussian theory values
        se = np.sqrt((theory**2 + np.outer(np.diag(theory), np.diag(theory))) / n)
        assert np.all(np.abs(cov - theory) < 6 * se), (a, b, cov, theory)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="centering"):
        Experiment(SMALL, 10, centering="batch")
    with pytest.raises(ValueError, match="n_test"):
        Experiment(SMALL, 10, n_test=0)
    with pytest.raises(ValueError, match="seed"):
        Experiment(SMALL, 10, seed=-1)
    with pytest.raises(ValueError, match="n_init"):
        Experiment(SMALL, 10).pretrain(n_init=0)
