# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (hdlora)
#     language: python
#     name: hdlora
# ---

# %% [markdown]
# # Bayes-optimal benchmarks (Result 6, App. B)
#
# The figures compare the trained attention with the Bayes-optimal (BO) estimator, which knows
# the data model. **Pre-training (App. B.1)**: the overlap $Q_{\rm BO}$ with the extensive target
# solves the input equation (87) — the MMSE of denoising $S^*/\sqrt D$ observed through a Gaussian
# channel — and the softmax output equation (89). **Fine-tuning (App. B.2)**: with the residual
# extensive part as side noise, $q_{\rm BO}$ solves (92) and (95) with the output partition
# function (96). `hdlora.theory.bayes` implements both.
#
# Parameters (papermill): every physical parameter below — the base point `T`, `kappa0`, `kappa`,
# `Delta`, `alpha`, `alpha_ft`, `activation` (Figure 1's left panel; the BO fine-tuning, the
# erratum and the comparison with the trained attention use it), and the variations of it:
# `pretrain_scan` (the overrides whose every combination gives a curve of the BO pre-training
# against $\alpha$), `alpha_range` (that $\alpha$ in units of $\alpha_{\rm PR}$), `alpha_ft_range`,
# `lam_fts_side`, `lams`, `lam_fts`, and the denoising problems `rie_points` —, `profile` (sizes
# when `n_alpha`, `n_alpha_ft`, `n_mc`, `n_out`, `D_rie`, `n_mc_se`, `lams`, `lam_fts` are
# None), `out_dir` (None: `build/runs/05_bayes_optimal/`), `seed`, `progress` (None: the
# `HDLORA_PROGRESS` environment variable decides), `recompute` (True: ignore the cached tables).

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
# the base point (Figure 1's left panel)
T = 3
kappa0 = 1.0
kappa = 1.0
Delta = 0.5
alpha = 0.1
alpha_ft = 3.0
activation = "softmax"  # the BO output channel (89) is given for the softmax only
# variations of the base point
pretrain_scan = {"T": [2, 3], "kappa0": [0.5, 1.0], "Delta": [0.0, 0.5]}  # every combination
alpha_range = [0.02, 3.0]  # alpha / alpha_PR of the BO pre-training curves
alpha_ft_range = [0.1, 10.0]  # alpha' of the BO fine-tuning curve
lam_fts_side = [0.1, 0.2, 0.5]  # lambda' of the trained LoRA with the BO side information
lams = None  # lambda of the trained attention set beside the BO errors
lam_fts = None  # lambda' of the trained attention set beside the BO errors
# the denoising problems of the check of eq. (87): (kappa0, noise variance)
rie_points = [[1.0, 0.5], [0.5, 0.2], [1.0, 2.0]]
n_alpha = None  # points of each BO pre-training curve
n_alpha_ft = None  # points of the BO fine-tuning curve
n_mc = None  # Monte-Carlo samples of the BO errors
n_out = None  # outer and inner draws of the BO fine-tuning integral (96)
D_rie = None  # dimension of the denoising check
n_mc_se = None  # Monte-Carlo samples of the trained state evolution

# %%
import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hdlora import Params
from hdlora.harness.run import Run
from hdlora.harness.tables import code_version
from hdlora.theory import EffectivePretraining, bayes, finetune, pretrain, spectral

run = Run("05_bayes_optimal", out_dir, profile, recompute, executor)
n_alpha = run.choose(n_alpha, smoke=5, quick=16, paper=30)
n_alpha_ft = run.choose(n_alpha_ft, smoke=3, quick=7, paper=12)
n_mc = run.choose(n_mc, smoke=20_000, quick=200_000, paper=1_000_000)
n_out = run.choose(n_out, smoke=400, quick=2000, paper=4000)
D_rie = run.choose(D_rie, smoke=300, quick=1500, paper=3000)
n_mc_se = run.choose(n_mc_se, smoke=3000, quick=30000, paper=100000)
lams = run.choose(lams, smoke=[0.01, 0.1], quick=[0.005, 0.01, 0.03, 0.1, 0.3],
                  paper=[0.003, 0.005, 0.01, 0.03, 0.1, 0.3])
lam_fts = run.choose(lam_fts, smoke=[0.5], quick=[0.05, 0.5, 1.0], paper=[0.05, 0.2, 0.5, 1.0])
# every point is built here, so that a bad value fails at once with the message of Params
base = Params(T=T, kappa0=kappa0, kappa=kappa, Delta=Delta, alpha=alpha, alpha_ft=alpha_ft,
              activation=activation)
bayes.output_count(T, activation)  # the BO formulas cover the softmax only
scan_bases = [base.replace(**dict(zip(pretrain_scan, values, strict=True)))
              for values in itertools.product(*pretrain_scan.values())]
scan_points = [b.replace(alpha=float(a))  # α in units of α_PR of each curve
               for b in scan_bases
               for a in np.geomspace(*alpha_range, n_alpha) * bayes.perfect_recovery_threshold(b)]
ft_points = [base.replace(alpha_ft=float(a)) for a in np.geomspace(*alpha_ft_range, n_alpha_ft)]
side_points = [base.replace(lam_ft=lam_ft_) for lam_ft_ in lam_fts_side]
cmp_pretrain_points = [base.replace(lam=lam_) for lam_ in lams]
cmp_points = [p.replace(lam_ft=lam_ft_) for p in cmp_pretrain_points for lam_ft_ in lam_fts]
for point in rie_points:
    if not (len(point) == 2 and all(isinstance(x, int | float) and x > 0 for x in point)):
        raise ValueError(f"rie_points must hold pairs (kappa0 > 0, noise variance > 0), got {point!r}")

# %% [markdown]
# ## The input channel (87) and the notation $\mu_{1/\hat Q}$
#
# Eq. (87), $Q_{\rm BO}=Q_0-\frac1{\hat Q}+\frac{4\pi^2}{3\hat Q^2}\int\mu_{1/\hat Q}(t)^3\mathrm dt$, is
# $Q_0$ minus the MMSE of the denoising problem $Y=S^*/\sqrt D+\hat Q^{-1/2}Z$ (eq. 88), with
# $\mathrm{mmse}(\Delta)=\Delta-\frac{4\pi^2}3\Delta^2\int\rho_Y^3$ and $\Delta=1/\hat Q$ the *variance*
# of the noise. So $\mu_{1/\hat Q}$ is $\mu_0$ convolved with a semicircle of **variance** $1/\hat Q$
# (radius $2/\sqrt{\hat Q}$), i.e. $\mu_\eta$ of `hdlora.theory.spectral` with $\eta=\hat Q^{-1/2}$ — not a
# semicircle of radius $1/\hat Q$ as the subscript, read like the $\mu_\eta$ of eq. (44), would say.
#
# Check: at finite $D$ the optimal rotationally invariant estimator (Bun, Allez, Bouchaud,
# Potters) keeps the eigenvectors of $Y$ and maps each eigenvalue to $\lambda-2\Delta\,h_Y(\lambda)$,
# $h_Y$ the Hilbert transform of $\rho_Y$ (`Re g` in `hdlora.theory.spectral`, also right for the few
# eigenvalues that a finite $D$ puts just past an edge). Its error
# $D^{-1}\|\hat S-S^*/\sqrt D\|_F^2$ is compared with $\mathrm{mmse}$ under both readings.

# %%
def rie_table():
    rng = np.random.default_rng(seed)
    rie_rows = []
    for kappa0, Delta_noise in rie_points:
        P0 = int(kappa0 * D_rie)
        W = rng.standard_normal((D_rie, P0))
        S = W @ W.T / math.sqrt(P0 * D_rie)
        A = rng.standard_normal((D_rie, D_rie))
        Y = S + math.sqrt(Delta_noise) * (A + A.T) / math.sqrt(2 * D_rie)
        lam, U = np.linalg.eigh(Y)
        eta = math.sqrt(Delta_noise)
        xi = lam - 2 * Delta_noise * spectral.stieltjes(lam, eta, kappa0).real
        S_hat = (U * xi) @ U.T
        err = ((S_hat - S) ** 2).sum() / D_rie
        Q_hat = 1 / Delta_noise
        variance_reading = bayes.mmse(Q_hat, kappa0)
        radius_reading = 1 / Q_hat - 4 * math.pi**2 / (3 * Q_hat**2) * spectral.cube_integral(
            1 / (2 * Q_hat), kappa0)
        rie_rows.append({"kappa0": kappa0, "noise_variance": Delta_noise, "D": D_rie,
                         "seed": seed, "rie_error": err, "mmse_variance_reading": variance_reading,
                         "mmse_radius_reading": radius_reading})
    return pd.DataFrame(rie_rows)


rie = run.table("bayes_mmse_reading", rie_table, points=rie_points, D=D_rie, seed=seed,
                code=code_version("hdlora.theory.bayes"))
assert np.all(np.abs(rie["rie_error"] - rie["mmse_variance_reading"]) < 0.03 * rie["mmse_variance_reading"] + 0.01)
rie.drop(columns="cache_key").round(4)

# %% [markdown]
# ## BO pre-training against $\alpha$
#
# $Q_{\rm BO}$ solves one scalar equation, found by a bracketing root finder (a damped iteration
# slows down critically near the threshold). With $\Delta=0$ the BO estimator recovers $S^*$
# exactly above $\alpha_{\rm PR}=2(\bar\kappa-\bar\kappa^2/2)/(T^2+T-2)$, $\bar\kappa=\min(\kappa_0,1)$:
# there the MMSE is 0 and so is $\mathcal E_{\rm BO}$. Below it, as $\alpha\to0$,
# $Q_{\rm BO}\to\kappa_0$: the estimator knows only the mean of the spectrum.

# %%
def bo_pretrain_table():
    bo_rows = []
    for p in scan_points:
        r = bayes.pretrain(p, n_mc=n_mc, seed=seed)
        bo_rows.append({**p.to_dict(), "n_mc": n_mc, "seed": seed, "Q0": r.Q0, "Q_BO": r.Q,
                        "mmse": r.mmse, "E_BO": r.test_error, "E_BO_se": r.test_error_se,
                        "alpha_PR": bayes.perfect_recovery_threshold(p),
                        "perfect_recovery": r.perfect_recovery})
    return pd.DataFrame(bo_rows)


bo = run.table("bayes_pretrain_alpha", bo_pretrain_table, points=scan_points, n_mc=n_mc, seed=seed,
               code=code_version("hdlora.theory.bayes"))
curves = list(pretrain_scan)  # one curve per combination of the overrides
for key, grp in bo.groupby(curves):
    assert ((grp["Q_BO"] >= 0) & (grp["Q_BO"] <= grp["Q0"] + 1e-12)).all()
    assert np.all(np.diff(grp["Q_BO"].to_numpy()) >= -1e-10), key  # increasing in α
    if grp["Delta"].iloc[0] == 0:  # perfect recovery exactly above the threshold
        assert (grp["perfect_recovery"] == (grp["alpha"] > grp["alpha_PR"] * (1 + 1e-9))).all(), key
bo.groupby(curves)[["alpha_PR"]].first()

# %% [markdown]
# The left panel shows the MMSE $Q_0-Q_{\rm BO}$ against $\alpha$, the right one the BO test error
# $\mathcal E_{\rm BO}$, one curve per combination of `pretrain_scan`. Look at the $\Delta=0$ curves:
# they fall to zero exactly at their dotted line $\alpha_{\rm PR}$ (perfect recovery), which moves
# with $T$ and $\kappa_0$; with $\Delta>0$ the MMSE decreases smoothly and stays positive, and
# $\mathcal E_{\rm BO}$ keeps a floor set by the noise.

# %%
symbols = {"T": "T", "kappa0": "κ0", "kappa": "κ", "Delta": "Δ", "alpha_ft": "α'", "activation": "σ"}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for key, grp in bo.groupby(curves):
    key = key if isinstance(key, tuple) else (key,)
    label = ", ".join(f"{symbols.get(k, k)}={v}" for k, v in zip(curves, key, strict=True))
    line, = axes[0].plot(grp["alpha"], grp["mmse"], label=label)
    axes[1].plot(grp["alpha"], grp["E_BO"], color=line.get_color(), label=label)
    if grp["Delta"].iloc[0] == 0:
        for ax in axes:
            ax.axvline(grp["alpha_PR"].iloc[0], color=line.get_color(), ls=":", lw=0.8)
axes[0].set_ylabel("MMSE $Q_0-Q_{\\rm BO}$")
axes[1].set_ylabel("$\\mathcal{E}_{\\rm BO}$")
for ax in axes:
    ax.set_xscale("log")
    ax.set_xlabel("$\\alpha$")
axes[0].legend(fontsize=7)
fig.suptitle("Bayes-optimal pre-training (dotted: perfect-recovery threshold at Δ = 0)", fontsize=10)
fig.tight_layout()
run.save(fig, "bayes_pretrain")
plt.show()

# %% [markdown]
# ## BO fine-tuning against $\alpha'$ ($\mathrm e=0$)
#
# The inner $T$-dimensional integral of (96) is a self-normalised Monte Carlo with fixed draws; its
# error is the change of $\hat q$ when the number of inner draws halves (`inner_error`).

# %%
pre_bo = bayes.pretrain(base, n_mc=n_mc, seed=seed)  # the BO pre-training of the base point


def bo_finetune_table():
    ft_rows = []
    for p in ft_points:
        r = bayes.finetune(p, pre_bo, n_out=n_out, n_inner=n_out, n_mc=n_mc, seed=seed)
        ft_rows.append({**p.to_dict(), "n_out": n_out, "n_mc": n_mc, "seed": seed, "q_BO": r.q,
                        "q_hat": r.q_hat, "E_ft_BO": r.ft_test_error,
                        "E_ft_BO_se": r.ft_test_error_se, "o_BO": r.overlap,
                        "inner_error": r.inner_error})
    return pd.DataFrame(ft_rows)


ft = run.table("bayes_finetune_alpha_ft", bo_finetune_table, points=ft_points, n_out=n_out,
               n_mc=n_mc, seed=seed, code=code_version("hdlora.theory.bayes"))
assert ((ft["q_BO"] >= 0) & (ft["q_BO"] <= 1)).all()
assert np.all(np.diff(ft["q_BO"].to_numpy()) > 0)
ft[["Delta", "alpha_ft", "q_BO", "o_BO", "E_ft_BO", "E_ft_BO_se", "inner_error"]].round(4)

# %% [markdown]
# ## Erratum in (95)–(96): the side noise of the data
#
# The fine-tuning observation is $\sigma(z^*+\chi^*\chi^{*\top}-q_0I_T)$ with $z^*=z+h$, where $z$ is
# known to the BO estimator (its pre-training) and $h$ has entries of variance
# $(1+\delta_{ab})V_{\rm BO}$. The likelihood of a candidate $\tilde\chi$ therefore pins
# $\tilde\chi\tilde\chi^\top$ to $\chi^*\chi^{*\top}+h$ (up to $s\mathbb 1\mathbb 1^\top$), and the
# average in (95) must run over $h$. Eq. (96) as printed uses $\chi^*\chi^{*\top}$ alone: data
# without their noise, scored by a noisy likelihood. The test: no estimator can beat the BO one
# with the same information. Give the *trained* LoRA the BO side information
# (an effective pre-training with $Q=M=Q_{\rm BO}$, so $\Delta_{\rm eff}=V_{\rm BO}$) and compare.

# %%
side = EffectivePretraining(Q0=pre_bo.Q0, Q=pre_bo.Q, M=pre_bo.Q)


def reading_table():
    trained_best = max((finetune(p, side, n_mc=n_mc_se, seed=seed, progress=progress)
                        for p in side_points), key=lambda r: r.overlap)
    readings = []
    for noise_in_data in (False, True):
        r = bayes.finetune(base, pre_bo, n_out=n_out, n_inner=n_out, n_mc=n_mc, seed=seed,
                           noise_in_data=noise_in_data)
        readings.append({"reading": "corrected (noise in the data)" if noise_in_data else "as printed",
                         "lam_ft": np.nan, "o_BO": r.overlap, "E_ft_BO": r.ft_test_error,
                         "inner_error": r.inner_error})
    readings.append({"reading": f"trained LoRA, same side information, λ'={trained_best.params.lam_ft}",
                     "lam_ft": trained_best.params.lam_ft, "o_BO": trained_best.overlap,
                     "E_ft_BO": trained_best.ft_test_error, "inner_error": np.nan})
    point = {k: v for k, v in base.to_dict().items() if k not in ("lam", "lam_ft")}
    return pd.DataFrame(readings).assign(**point, Q_BO=pre_bo.Q, n_out=n_out, n_mc=n_mc,
                                         n_mc_se=n_mc_se, seed=seed)


readings = run.table("bayes_finetune_reading", reading_table, point=base, side_points=side_points,
                     n_out=n_out, n_mc=n_mc, n_mc_se=n_mc_se, seed=seed,
                     code=[code_version("hdlora.theory.bayes"), code_version(finetune)])
assert readings["o_BO"].iloc[1] > readings["o_BO"].iloc[2]  # corrected BO beats the trained LoRA
assert readings["o_BO"].iloc[0] < readings["o_BO"].iloc[2]  # the printed form does not
readings[["reading", "Delta", "alpha_ft", "lam_ft", "o_BO", "E_ft_BO", "inner_error"]].round(4)

# %% [markdown]
# ## The BO errors lie below the trained attention
#
# At $T=3$, $\kappa_0=\kappa=1$, $\Delta=0.5$, $\alpha=0.1$, $\alpha'=3$ (Figure 1's left panel), the
# state evolution of the trained attention over a range of $\lambda$ (and $\lambda'$) never goes
# below the BO errors: a consistency check of both sides, since the BO formulas come from earlier
# papers. (That point is the base point of the parameters cell; the BO errors are those of
# the corrected reading above.)

# %%
bo_ft = readings.iloc[1]  # the corrected BO fine-tuning of the base point (same call, same draws)


def cmp_table():
    cmp_rows = []
    for pre_point in cmp_pretrain_points:
        pr = pretrain(pre_point, n_mc=n_mc_se, seed=seed, progress=progress)
        for lam_ft_ in lam_fts:
            p = pre_point.replace(lam_ft=lam_ft_)
            f = finetune(p, pr, n_mc=n_mc_se, seed=seed, progress=progress)
            cmp_rows.append({**p.to_dict(), "n_mc_se": n_mc_se, "n_mc": n_mc, "seed": seed,
                             "E_trained": pr.test_error, "E_ft_trained": f.ft_test_error,
                             "overlap_trained": f.overlap, "E_BO": pre_bo.test_error,
                             "E_ft_BO": bo_ft["E_ft_BO"], "o_BO": bo_ft["o_BO"]})
    return pd.DataFrame(cmp_rows)


cmp = run.table("bayes_vs_trained", cmp_table, points=cmp_points, n_mc=n_mc, n_mc_se=n_mc_se,
                n_out=n_out, seed=seed,
                code=[code_version("hdlora.theory.bayes"), code_version(pretrain), code_version(finetune)])
assert (cmp["E_trained"] >= cmp["E_BO"]).all()
assert (cmp["E_ft_trained"] >= cmp["E_ft_BO"]).all()
cmp[["lam", "lam_ft", "E_trained", "E_ft_trained", "overlap_trained", "E_BO", "E_ft_BO", "o_BO"]].round(4)
