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
# # Fine-tuning theory: rank-one LoRA after a frozen pre-training (Results 2, 3, 5; App. A.4–A.8)
#
# With the pre-training frozen, the LoRA vector $w$ sees each fine-tuning sequence through the
# rank-one fields $(\chi^*,\chi)=D^{-1/2}X(w^*,w)$, and the extensive part of the attention acts
# as side information $(z^*,z)$ that the LoRA cannot learn (App. A.4). This notebook states the
# fine-tuning state evolution, checks the limiting baselines of App. A.7, and compares the full
# two-stage prediction with simulations of the attention, for fresh ($\mathrm e=0$) and reused
# ($\mathrm e=1$) fine-tuning sequences.
#
# Parameters (papermill): the first validation point (`T`, `kappa0`, `kappa`, `Delta`, `alpha`,
# `alpha_ft`, `lam`, `activation`) with its values of λ' (`lam_fts`) and the further points
# `variants` (overrides of the first point; `math.inf` is written `inf`); the effective
# pre-trainings of the frozen-baseline check (`baseline_cases`, rows Q0, Q, M, Δ); the sizes
# `Ds`, `seeds`, `n_mc`, `mc_seeds`, `n_baseline` (None: the `profile`'s values); `out_dir` (None:
# `build/runs/03_finetuning_theory/`), `seed`, `progress`, `recompute`.

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
# the first validation point (e = 0) and its values of λ'
T = 3
kappa0 = 1.0
kappa = 1.0
Delta = 0.5
alpha = 0.1
alpha_ft = 3.0
lam = 0.1
activation = "softmax"
lam_fts = [0.05, 1.0]
# further points: overrides of the first point (lam_ft defaults to lam_fts[0]); "inf" = math.inf
variants = [
    {"activation": "linear", "lam_ft": 0.5},
    {"T": 2, "kappa0": 0.5, "alpha": 0.2, "lam": 0.05, "lam_ft": 0.5, "reuse": True},
    {"T": 2, "kappa0": 0.5, "alpha": 0.2, "lam": 0.3, "lam_ft": 0.5, "reuse": True},
    {"lam": "inf"},
    {"lam_ft": "inf"},
]
# the frozen baseline (linear σ, λ' = ∞): effective pre-trainings (Q0, Q, M, Δ)
baseline_cases = [[2.0, 0.7, 0.9, 0.5], [2.0, 1.3, 1.4, 0.0], [1.5, 0.2, 0.3, 2.0]]
Ds = None
seeds = None
n_mc = None
mc_seeds = None
n_baseline = None

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hdlora import Params
from hdlora.harness.agreement import agreement_table, bias_power, check_agreement
from hdlora.harness.run import Run
from hdlora.harness.tables import lam_ft_jobs
from hdlora.model import activations
from hdlora.simulation import recalibration_scan
from hdlora.theory import EffectivePretraining, finetune, state_evolution

run = Run("03_finetuning_theory", out_dir, profile, recompute, executor)
Ds = run.size("Ds_validation", Ds)
seeds = run.choose(seeds, smoke=list(range(4)), quick=list(range(6)), paper=list(range(8)))
# randomised quasi-Monte Carlo: one seed, standard errors from its independent blocks
n_mc = run.size("n_mc_validation", n_mc)
mc_seeds = run.size("mc_seeds_validation", mc_seeds)
n_baseline = run.choose(n_baseline, smoke=500_000, quick=8_000_000, paper=16_000_000)


def _value(x):
    return math.inf if x in ("inf", "Infinity") else x


# every point is validated now (a bad value fails here, with the Params message)
first = Params(T=T, kappa0=kappa0, kappa=kappa, Delta=Delta, alpha=alpha, alpha_ft=alpha_ft,
               lam=lam, lam_ft=lam_fts[0], activation=activation)
points = [first.replace(lam_ft=x) for x in lam_fts]
points += [first.replace(**{k: _value(v) for k, v in var.items()}) for var in variants]
baselines = [(EffectivePretraining(Q0=q0, Q=q, M=m), d) for q0, q, m, d in baseline_cases]

# %% [markdown]
# ## Results 2, 3, 5 and the decoupling (App. A.4)
#
# **Decoupling.** For a fresh sequence the mixed covariances between the extensive fields
# $(z^*,z)$ and the rank-one fields $(\chi^*,\chi)$ are $O(D^{-1/2})$ (eqs. 57–58, checked at
# finite $D$ in `01_model`), and overlaps such as $D^{-2}w^\top S^*w$ vanish (eqs. 59–60). So,
# given the pre-training order parameters, the fine-tuning is a rank-one generalised linear model
# in $w$ whose output channel carries $(z^*,z)$ as side information: $(z^*,z)\sim\mathcal Q$
# (Result 1) for fresh sequences ($\mathrm e=0$), $(z^*,z)\sim\mathcal R$ (Result 2) for reused
# ones ($\mathrm e=1$, eq. 61).
#
# **Proximal (eqs. 63–64).** With $\chi^*\sim\mathcal N(0,I_T)$, $\tilde\chi=m\chi^*+\sqrt{q-m^2}\,\zeta$ (eq. 62),
# $$\psi(\chi;\chi^*,\tilde\chi,z^*,z)=-\|\sigma(z+\chi\chi^\top-qI_T)-\sigma(z^*+\chi^*\chi^{*\top}-I_T)\|_F^2-\sum_a\frac{(\tilde\chi_a-\chi_a)^2}{2v},\qquad
# \chi^{\rm prox}=\operatorname*{arg\,max}_\chi\psi .$$
#
# **Free entropy (Result 5, eq. 65)** and its stationarity conditions (67)–(72): with
# $C=-[\nabla^2_\chi\psi(\chi^{\rm prox})]^{-1}$,
# $$m=\hat mv,\quad q=(\hat m^2+\hat q)v^2,\quad v=\frac1{2\lambda'+\hat v},\qquad
# \hat m=\frac{\alpha'}v\mathbb E\Big[\chi^{*\top}\chi^{\rm prox}-\frac mv\operatorname{Tr}C\Big],\quad
# \hat q=\frac{\alpha'}{v^2}\mathbb E\|\chi^{\rm prox}-\tilde\chi\|^2,\quad
# \hat v=\frac{\alpha'T}v-\frac{\alpha'}{v^2}\mathbb E\operatorname{Tr}C-2\alpha'\mathbb E\,\partial_q\psi .$$
# (Derived here again from (65) by Stein's lemma on $\zeta$ and the envelope theorem: (70)–(72) as
# printed are right.) The $\partial_q\psi$ term differentiates only the explicit $-qI_T$ shift of
# the student's centring.
#
# **Errors (Result 3, eqs. 19–20, 73, 84).** $\mathcal E'=\mathbb E_{\mathcal Q,\mathcal Q'}\|\sigma(z+\chi\chi^\top-qI)-\sigma(z^*+\chi^*\chi^{*\top}-I)\|_F^2$,
# $\mathcal L'$ the same over the train law $\mathcal R'$, the forgetting error
# $\mathcal E''=\mathbb E\|\sigma(z+\chi\chi^\top-qI)-\sigma(z^*)\|_F^2$, and $o_w=m/\sqrt{qq_0}$.
#
# **Stability (App. A.6, eq. 78).** $\alpha'\mathbb E\|(v\nabla^2\psi(\mathrm{prox}))^{-1}+I_T\|_F^2<1$.
#
# `hdlora.theory.finetune` solves this with common random numbers, the batched Newton proximal of
# `hdlora.theory.prox_finetune` (starts $\tilde\chi$ and $-\tilde\chi$, since $\psi$ is even in $\chi$
# when $\tilde\chi=0$) and the Anderson-accelerated fixed point. $m=0$ is an exact fixed point (the
# $w\to-w$ symmetry); the iteration starts from $m>0$.

# %% [markdown]
# ## The frozen baseline, eqs. (79)–(80), and an erratum in (80)
#
# With $\lambda'=\infty$, $\hat w=0$ and
# $\mathcal E'_{\rm frozen}=\mathbb E\|\sigma(z)-\sigma(z^*+\chi^*\chi^{*\top}-I_T)\|_F^2$ (79).
# For $\sigma(x)=x/T$, $h=z-z^*$ has entries of variance $(1+\delta_{ab})\Delta_{\rm eff}$
# (eq. 101), independent of $\chi^*$, and $\chi^*\chi^{*\top}-I_T$ has entries of variance
# $1+\delta_{ab}$. Summing over the $T^2$ entries,
# $$\mathcal E'_{\rm frozen}=\frac{(T^2+T)\,\Delta_{\rm eff}+T^2+T}{T^2}
# \qquad\text{(eq. 80 prints }T^2+T-2\text{ as the coefficient of }\Delta_{\rm eff}).$$
# ($T^2+T-2$ is the count of the softmax's Bayes-optimal channel, eq. 89, where the direction
# $\mathbb 1\mathbb 1^\top$ is invisible; the identity sees every entry.) Below: a direct Monte Carlo
# of (79), the solver at $\lambda'=\infty$, both forms of (80), for several pre-trainings.

# %%
rng = np.random.default_rng(seed)
sigma = activations.activation("linear")
rows = []
chunk = min(n_baseline, 500_000)
for pre, D_ in baselines:
    Q0, Q, M = pre.Q0, pre.Q, pre.M
    d_eff = D_ / 2 + Q0 + Q - 2 * M
    # direct Monte Carlo of eq. (79), independent of the solver, in chunks
    C = np.array([[D_ / 2 + Q0, M], [M, Q]])
    Lc = np.linalg.cholesky(C)
    parts = []
    for _ in range(n_baseline // chunk):
        x = rng.standard_normal((chunk, T, T, 2)) @ Lc.T / math.sqrt(2)
        zz = x + np.swapaxes(x, 1, 2)  # symmetric, entry variances (1 + δ_ab) C
        chi = rng.standard_normal((chunk, T))
        target = zz[..., 0] + chi[:, :, None] * chi[:, None, :] - np.eye(T)
        parts.append(((sigma(zz[..., 1]) - sigma(target)) ** 2).sum(axis=(1, 2)))
    err = np.concatenate(parts)
    p = first.replace(Delta=D_, activation="linear", lam_ft=math.inf)
    solver = finetune(p, pre, n_mc=n_mc, seed=seed, progress=False)
    rows.append({"Q0": Q0, "Q": Q, "M": M, "Delta": D_, "Delta_eff": d_eff,
                 "mc_eq79": err.mean(), "mc_se": err.std() / math.sqrt(len(err)),
                 "solver": solver.ft_test_error, "solver_se": solver.ft_test_error_se,
                 "eq80_corrected": ((T**2 + T) * d_eff + T**2 + T) / T**2,
                 "eq80_as_printed": ((T**2 + T - 2) * d_eff + T**2 + T) / T**2})
frozen = pd.DataFrame(rows)
assert np.all(np.abs(frozen["mc_eq79"] - frozen["eq80_corrected"]) < 5 * frozen["mc_se"])
assert np.all(np.abs(frozen["solver"] - frozen["eq80_corrected"]) < 5 * frozen["solver_se"])
assert np.all(np.abs(frozen["mc_eq79"] - frozen["eq80_as_printed"]) > 10 * frozen["mc_se"])
run.write(frozen.assign(T=T, n_baseline=n_baseline, n_mc=n_mc, seed=seed), "finetune_frozen_baseline")
frozen.round(5)

# %% [markdown]
# ## Two-stage prediction against simulation
#
# Points: $\mathrm e=0$, softmax, $T=3$, $\kappa_0=\kappa=1$, $\Delta=0.5$, $\alpha=0.1$,
# $\alpha'=3$, $\lambda=0.1$, $\lambda'\in\{0.05,1\}$; the same with the linear activation at
# $\lambda'=0.5$; $\mathrm e=1$, softmax, $T=2$, $\kappa_0=0.5$, $\kappa=1$, $\Delta=0.5$,
# $\alpha=0.2$, $\alpha'=3$, $\lambda\in\{0.05,0.3\}$, $\lambda'=0.5$; and at the first point the
# baselines $\lambda=\infty$ (LoRA only) and $\lambda'=\infty$ (frozen). Simulations pre-train and
# fine-tune the attention at several $D$ and seeds; the $D\to\infty$ value is the weighted fit
# $a+b/D$; the theory's standard error comes from the independent randomisations of its
# quasi-Monte Carlo (or the spread over seeds when `mc_seeds` holds several).

# %%
# one pre-training per point, D and seed, fine-tuned at each of its λ' (the records of
# `simulate`, `hdlora.harness.tables.lam_ft_jobs`)
sim = run.solve_jobs("finetune_validation_simulation", recalibration_scan, lam_ft_jobs(points),
                     seeds=seeds, grid={"D": Ds}, betas=[1.0],
                     progress=progress)
theory = run.solve("finetune_validation_theory", state_evolution, points, seeds=mc_seeds,
                   n_mc=n_mc, progress=progress)
assert sim["converged"].all() and theory["converged"].all()

# %%
keys = ["T", "kappa0", "Delta", "alpha", "lam", "lam_ft", "activation", "reuse"]
observables = ["ft_test_error", "ft_train_error", "overlap", "forgetting_error", "q", "m"]
agreement = agreement_table(sim, theory, keys, observables)
run.write(agreement, "finetune_validation_agreement")
cols = [*keys, "observable", "sim_inf", "sim_inf_se", "theory", "theory_se", "z", "rel_dev"]
agreement[cols].round(4)

# %% [markdown]
# Replicon values (eqs. 75 corrected and 78) at every point: below 1 means the replica-symmetric
# fixed point is locally stable.

# %%
rep = theory.groupby(keys, sort=False, dropna=False)[["replicon", "ft_replicon"]].mean()
rep = rep.reset_index().rename(columns={"replicon": "pretrain_replicon_75_corrected",
                                        "ft_replicon": "finetune_replicon_78"})
run.write(rep, "finetune_replicon")
rep.round(4)

# %% [markdown]
# Agreement criterion (fixed in advance, as for the pre-training, `hdlora.harness.agreement`):
# every $|z|$ below its Bonferroni Student-$t$ threshold, and for each observable the mean
# relative deviation over the points within its Bonferroni threshold in units of its standard
# error across seeds (the points share their seeds' teachers). Comparisons where simulation and theory are both exactly zero (the frozen
# baseline's $q=m=0$) are excluded and counted; the power is the smallest uniform bias of the
# theory that the check rejects.

# %%
check = check_agreement(agreement)
power = bias_power(sim, theory, keys, observables)
print(check.summary())
print(f"power: the check rejects a uniform bias of the theory of {power:.1%} or more")
assert check.passed, check.failures
assert power <= 0.10  # a 10 % error in the theory cannot pass
check.by_observable.round(4)

# %% [markdown]
# The validation at a glance: for each point, the extrapolated simulation (squares) beside the
# theory (circles) for $\mathcal E'$, $\mathcal L'$, $o_w$ and $\mathcal E''$. Look for any point where
# the two markers are separated by more than their error bars.

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
labels = [f"{'lin' if p.activation == 'linear' else 'sm'} e={p.e} λ={p.lam:g} λ'={p.lam_ft:g}" for p in points]
for ax, col in zip(axes, ["ft_test_error", "ft_train_error", "overlap", "forgetting_error"], strict=True):
    sub = agreement[agreement["observable"] == col].reset_index(drop=True)
    x = np.arange(len(sub))
    ax.errorbar(x - 0.1, sub["sim_inf"], sub["sim_inf_se"], fmt="s", ms=4, label="simulation, D→∞")
    ax.errorbar(x + 0.1, sub["theory"], sub["theory_se"], fmt="o", ms=4, label="theory")
    ax.set_xticks(x)
    ax.set_xticklabels(labels[: len(sub)], rotation=70, fontsize=6)
    ax.set_title(col)
axes[0].legend(fontsize=7)
fig.tight_layout()
run.save(fig, "finetune_validation")
plt.show()
