import math
import warnings

import direct
import numpy as np
import pytest
import torch

from hdlora import Params
from hdlora.diagnostics import ConvergenceWarning, StartsDisagreeWarning
from hdlora.params import EffectivePretraining
from hdlora.simulation import Experiment, recalibration_scan, simulate

SMALL = Params(T=3, alpha=0.2, alpha_ft=3.0, lam=0.1, lam_ft=0.5)


def _row(obs):
    row = obs.to_dict()
    row.pop("wall_time")
    return row


@pytest.mark.filterwarnings("ignore::hdlora.diagnostics.StartsDisagreeWarning")
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
    # the record's statistics cover both stages: iterations summed, the largest gradient
    assert obs.n_iter == fit.n_iter + fit_ft.n_iter > fit_ft.n_iter
    assert obs.residual == max(fit.grad_max, fit_ft.grad_max)


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


# ---------------------------------------------------------------- starts, β, active selection
def test_every_start_is_recorded_with_the_teacher_starts():
    """n_init = (1, 2) plus the Bayes and teacher starts (no moves): the record lists each start
    of each stage (kind, objective, overlap), and the kept one has the lowest objective."""
    p = Params(T=2, kappa0=0.5, alpha=0.2, alpha_ft=2.0, lam=0.1, lam_ft=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StartsDisagreeWarning)
        obs = simulate(
            p, 24, seed=1, n_init=(1, 2), teacher_start=True, basin_hops=0, progress=False
        )
    info = obs.info
    assert info["pre_n_starts"] == 2 and info["ft_n_starts"] == 4
    assert [info["pre_start0_kind"], info["pre_start1_kind"]] == ["random", "teacher"]
    kinds = [info[f"ft_start{k}_kind"] for k in range(4)]
    assert kinds == ["spectral", "random", "bayes", "teacher"]
    for prefix, stage, n in (("pre", "pretrain", 2), ("ft", "finetune", 4)):
        objectives = [info[f"{prefix}_start{k}_objective"] for k in range(n)]
        assert info[f"{stage}_objective"] == min(objectives)
        assert info[f"{prefix}_best_start"] == int(np.argmin(objectives))
    best = info["ft_best_start"]
    assert info[f"ft_start{best}_overlap"] == pytest.approx(obs.overlap, rel=1e-9)
    # the pre-training overlap is M/√(Q Q0) of the kept Ŵ
    best = info["pre_best_start"]
    assert info[f"pre_start{best}_overlap"] == pytest.approx(
        obs.M / math.sqrt(obs.Q * obs.Q0), rel=1e-9
    )


def test_teacher_pretrain_start_is_the_scaled_teacher():
    """W = c (P/P0)^{1/4} [W*, 0] gives Ŝ = c² S* (P > P0 here), with c the best of its scan."""
    p = SMALL.replace(kappa0=0.5, kappa=1.5)
    exp = Experiment(p, 12, seed=0, device="cpu")
    W = exp.teacher_pretrain_start()
    S_hat, S_star = direct.gram_S(W.numpy()), direct.gram_S(exp.teacher.W_star.numpy())
    c2 = np.trace(S_hat) / np.trace(S_star)
    np.testing.assert_allclose(S_hat, c2 * S_star, rtol=1e-10, atol=1e-12)
    from hdlora.model.losses import pretrain_objective

    c = math.sqrt(c2)
    assert c / 0.2 == pytest.approx(round(c / 0.2), abs=1e-9)  # c is one of the scanned values
    f = [float(pretrain_objective(W * (x / c), exp.train, p)) for x in (c - 0.2, c, c + 0.2)]
    assert f[1] <= min(f[0], f[2])


def test_default_starts_and_n_init():
    exp = Experiment(SMALL, 16, seed=2, device="cpu")
    W = exp.pretrain(progress=False)
    assert [s["kind"] for s in W.starts] == ["random", "random"]  # DEFAULT_N_INIT["pretrain"]
    w = exp.finetune(W.x, progress=False)
    assert [s["kind"] for s in w.starts] == ["spectral", "random", "random", "random", "bayes"]
    alone = dict(bayes_start=False, basin_hops=0, progress=False)  # the starts alone
    warm = exp.finetune(W.x, w0=w.x, **alone)  # a warm start alone
    assert [s["kind"] for s in warm.starts] == ["warm"] and warm.n_iter <= 2
    two = exp.finetune(W.x, w0=w.x, n_init=2, spectral_start=False, **alone)
    assert [s["kind"] for s in two.starts] == ["warm", "random"]
    for bad in (0, -1, 2.5, True, (1, 0), (1, 2, 3)):
        with pytest.raises(ValueError, match="n_init"):
            simulate(SMALL, 10, n_init=bad)


def test_recalibration_scales_the_frozen_map():
    """Ŵ → √β Ŵ (eq. 26): Q → β²Q, M → βM on the same Ŵ; beta=None uses β* = M/Q of this run;
    the fine-tuning runs on the rescaled map (same numbers as the pipeline done by hand)."""
    kw = dict(n_init=1, progress=False)
    base = simulate(SMALL, 20, seed=3, finetune=False, **kw)
    assert base.beta == 1.0 and base.beta_star == pytest.approx(base.M / base.Q, rel=1e-12)
    b = 0.6
    scaled = simulate(SMALL, 20, seed=3, beta=b, finetune=False, **kw)
    assert scaled.Q == pytest.approx(b * b * base.Q, rel=1e-12)
    assert scaled.M == pytest.approx(b * base.M, rel=1e-12)
    assert (scaled.info["Q_unscaled"], scaled.info["M_unscaled"]) == (base.Q, base.M)
    assert scaled.beta == b and scaled.beta_star == base.beta_star and scaled.Q0 == base.Q0
    eff = EffectivePretraining(Q0=base.Q0, Q=base.Q, M=base.M)
    assert scaled.Delta_eff == pytest.approx(eff.recalibrated(b).delta_eff(SMALL.Delta), rel=1e-12)
    star = simulate(SMALL, 20, seed=3, beta=None, finetune=False, **kw)
    assert star.beta == star.beta_star == pytest.approx(base.M / base.Q, rel=1e-12)
    assert star.Delta_eff < base.Delta_eff and star.Delta_eff < scaled.Delta_eff
    # the fine-tuning sees √β Ŵ
    full = simulate(SMALL, 20, seed=3, beta=b, n_init=(1, 2), progress=False)
    exp = Experiment(SMALL, 20, seed=3)
    W = math.sqrt(b) * exp.pretrain(n_init=1, progress=False).x
    fit = exp.finetune(W, n_init=2, progress=False)
    by_hand = exp.observables(W, fit.x, {"finetune": fit})
    assert full.ft_test_error == by_hand.ft_test_error and full.overlap == by_hand.overlap
    for bad in (0, -1.0, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="beta"):
            simulate(SMALL, 10, beta=bad)


def test_pretraining_error_is_smallest_near_beta_star_for_linear_sigma():
    """Linear σ: ℰ(β) = E‖√β-scaled z − z*‖²/T² is a parabola in β with its minimum at the
    test-set estimate of M/Q (App. C, eq. 102): the scan 0.7, 1, 1.3 × β* (Fig. 6, left) has
    its lowest error at β*."""
    p = SMALL.replace(activation="linear", lam=0.01)
    kw = dict(finetune=False, n_init=1, progress=False)
    beta_star = simulate(p, 20, seed=4, **kw).beta_star
    errors = [
        simulate(p, 20, seed=4, beta=factor * beta_star, **kw).test_error
        for factor in (0.7, 1.0, 1.3)
    ]
    assert errors[1] < errors[0] and errors[1] < errors[2], errors


def test_active_selection_in_the_two_stage_pipeline():
    """rho: the N' kept sequences are the candidates with the smallest frozen ‖σ(z) − σ(0)‖²
    (Algorithm 1): their mean score is far below that of the uniform set, the record says
    "active" and ρ, and for linear σ their measured effective noise is below the pool's."""
    p = SMALL.replace(activation="linear", alpha_ft=10.0)
    kw = dict(n_init=1, progress=False)
    uniform_exp = Experiment(p, 20, seed=5, device="cpu")
    W = uniform_exp.pretrain(n_init=1, progress=False).x
    active_exp = Experiment(p, 20, seed=5, device="cpu")
    active_exp.select_active(W, 0.25)

    def score(data):
        from hdlora.model.losses import pretrain_preactivation

        return (pretrain_preactivation(data.X, W) / p.T).square().sum(dim=(-1, -2)).mean()

    assert active_exp.ft.n == uniform_exp.ft.n == 200
    assert float(score(active_exp.ft)) < 0.5 * float(score(uniform_exp.ft))
    obs = simulate(p, 20, seed=5, rho=0.25, **kw)
    assert obs.selection == "active" and obs.rho == 0.25 and obs.info["n_candidates"] == 800
    assert obs.info["Delta_eff_train"] < obs.info["Delta_eff_pool"]
    with pytest.raises(ValueError, match="rho"):
        simulate(p.replace(reuse=True, alpha=1.0), 20, rho=0.5)
    with pytest.raises(ValueError, match="rho"):
        simulate(p, 20, rho=2.0)


def test_recalibration_scan_is_simulate_at_each_beta_and_lam_ft():
    """One pre-training for all (β, λ'): each record is the record of simulate(beta=β) with that
    λ' (same seed, same starts), β outermost."""
    kw = dict(n_init=(1, 2), progress=False)
    betas, lam_fts = [1.0, 0.5, None], [0.5, 1.0]
    records = recalibration_scan(SMALL, 16, seed=6, betas=betas, lam_fts=lam_fts, **kw)
    assert [r.params.lam_ft for r in records] == lam_fts * len(betas)
    assert [r.beta for r in records[:4]] == [1.0, 1.0, 0.5, 0.5]
    for i, (beta, lam_ft) in ((1, (1.0, 1.0)), (2, (0.5, 0.5)), (4, (None, 0.5))):
        alone = simulate(SMALL.replace(lam_ft=lam_ft), 16, seed=6, beta=beta, **kw)
        assert _row(records[i]) == _row(alone)
    assert records[4].beta == records[4].beta_star
    with pytest.raises(ValueError, match="beta"):
        recalibration_scan(SMALL, 16, betas=[0.0])


def test_lbfgs_stops_at_the_floating_point_floor_instead_of_spinning():
    """f = 10⁶ + Σ(x − 1)⁴: near the minimum the decrease is lost in the rounding of f while
    max|∇f| = 4|x − 1|³ is still above gtol = 1e-12; the minimiser must say so and stop early
    (it used to run to max_iter)."""
    from hdlora.simulation.lbfgs import minimize

    x0 = torch.full((5,), 3.0, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning):
        fit = minimize(lambda x: 1e6 + ((x - 1) ** 4).sum(), x0, gtol=1e-12, max_iter=20000)
    assert not fit.converged and fit.n_iter < 2000
    assert "stalled" in fit.message or "no progress" in fit.message


def test_a_converged_start_is_kept_over_a_stalled_one_at_the_same_minimum():
    """Linear σ, D = 100, α' = 10: the spectral start stalls at max|∇f| ≈ 1.7e-6 > gtol at the
    same minimum that the random starts reach with max|∇f| < gtol: the record keeps a converged
    start and is converged."""
    from hdlora.simulation import simulate_finetune

    p = Params(T=3, Delta=0.0, lam_ft=0.5, alpha_ft=10.0, activation="linear")
    r = simulate_finetune(p, EffectivePretraining.on_diagonal(2.0, 0.0), 100, 0)
    kept = r.info["ft_best_start"]
    assert r.converged and r.info[f"ft_start{kept}_converged"]
    objectives = [r.info[f"ft_start{k}_objective"] for k in range(r.info["ft_n_starts"])]
    assert r.info[f"ft_start{kept}_objective"] <= min(objectives) * (1 + 1e-7)


def test_the_test_sets_are_ten_D_fresh_sequences_by_default():
    """App. D measures the errors on 10 D fresh sequences of each task; ``n_test`` overrides it
    and must be an integer >= 1 (named in the error)."""
    from hdlora.simulation import FinetuneExperiment

    D = 12
    exp = Experiment(SMALL, D, seed=0)
    assert exp.test.X.shape[0] == exp.test_ft.X.shape[0] == 10 * D
    eff = EffectivePretraining(Q0=1.5, Q=1.5, M=1.0)
    blocks = list(FinetuneExperiment(SMALL, eff, D, seed=0).test_blocks())
    assert sum(X.shape[0] for X, _, _ in blocks) == 10 * D
    assert Experiment(SMALL, D, seed=0, n_test=7).test.X.shape[0] == 7
    with pytest.raises(ValueError, match="n_test"):
        Experiment(SMALL, D, seed=0, n_test=0)


@pytest.mark.filterwarnings("ignore::hdlora.diagnostics.StartsDisagreeWarning")
def test_the_pipelines_bayes_start_finds_the_minimum_the_spectral_one_misses(monkeypatch):
    """The two-stage pipeline at D = 60, seed 1 (T = 2, α' = 2, λ' = 0.5): the spectral start
    alone stops at o_w ≈ 0.12, well above the minimum L-BFGS finds from the teacher w*; the
    default (its starts, the Bayes start, the moves) reaches that minimum without the teacher.
    The Bayes start reads the centred frozen field z of the training sequences: its mean over
    the sequences is 0 within its standard error (the uncentred D⁻¹XŜXᵀ is not)."""
    import hdlora.simulation.search as search
    from hdlora.model.losses import frozen_preactivation

    p = Params(T=2, kappa0=0.5, alpha=0.5, alpha_ft=2.0, lam=0.1, lam_ft=0.5)
    exp = Experiment(p, 60, seed=1, device="cpu")
    W = exp.pretrain(progress=False).x
    alone = dict(bayes_start=False, basin_hops=0, progress=False)
    ref = exp.finetune(W, n_init=1, spectral_start=False, teacher_start=True, **alone)
    assert ref.starts[ref.best_start]["kind"] == "teacher"
    spectral = exp.finetune(W, n_init=1, **alone)
    assert spectral.objective > ref.objective + 0.1
    assert spectral.starts[0]["overlap"] < 0.3 < 0.7 < ref.starts[1]["overlap"]
    fields = []
    original = search.bayes_spectral_start

    def spy(X, target, z, activation, key):
        fields.append(z)
        return original(X, target, z, activation, key)

    monkeypatch.setattr(search, "bayes_spectral_start", spy)
    fit = exp.finetune(W, progress=False)
    assert fit.objective <= ref.objective * (1 + 1e-7)
    assert fit.search["ft_bayes_start"] and fit.search["ft_search_settled"]
    (z,) = fields
    n = z.shape[0]
    mean, se = z.mean(0), z.std(0) / n**0.5
    assert (mean.abs() < 4 * se).all()
    # the uncentred field's diagonal has mean tr(Ŝ)/D-like, here ≈ 3 (30 standard errors)
    uncentred = frozen_preactivation(exp.ft.X, W).mean(0).diagonal()
    assert (uncentred > 10 * se.diagonal()).all()


def test_the_bayes_start_of_a_model_without_pre_training():
    """λ = ∞ gives Ŵ = 0, a frozen field z = 0: the Bayes preprocessing has nothing to remove
    (κ = 0) and the start is still run; the default search reaches at least the starts' minimum."""
    p = SMALL.replace(lam=math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StartsDisagreeWarning)
        obs = simulate(p, 20, seed=0, progress=False)
    assert obs.Q == 0 and obs.info["ft_bayes_start"] is True
    assert math.isfinite(obs.info["finetune_objective"]) and obs.converged


def test_the_frozen_models_record_has_the_searchs_columns():
    """λ' = ∞ (ŵ = 0, no fit) records that nothing was searched, with the same columns as a
    fitted record, so a table mixing both has no hole where the search's columns are."""
    frozen = simulate(SMALL.replace(lam_ft=math.inf), 16, seed=0, progress=False).info
    assert frozen["ft_n_hops"] == 0 and frozen["ft_search_settled"] is True
    assert frozen["ft_bayes_start"] is False and frozen["ft_search_skipped"] is False
    assert frozen["ft_hops_objective_drop"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StartsDisagreeWarning)
        fitted = simulate(SMALL, 16, seed=0, basin_hops=0, progress=False).info
    search = {k for k in fitted if k.startswith(("ft_search", "ft_hops", "ft_n_hops", "ft_bayes"))}
    assert search and search <= set(frozen)
