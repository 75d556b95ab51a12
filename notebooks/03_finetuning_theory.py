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
# Parameters (papermill): `profile` ∈ {smoke, quick, paper}, `seed`, `progress`, `recompute`.

# %% tags=["parameters"]
profile = "quick"
seed = 0
progress = True
recompute = False

# %%
import logging
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hdlora import Params
from hdlora.model.activations import activation
from hdlora.harness.io import output_dirs, save_figure, write_table
from hdlora.harness.profiles import choose
from hdlora.harness.tables import (
    agreement_table,
    cached,
    check_agreement,
    simulation_table,
    theory_table,
)
from hdlora.theory import EffectivePretraining, finetune, state_evolution

logging.basicConfig(level=logging.WARNING)
data_dir, fig_dir = output_dirs(profile)
Ds = choose(profile, smoke=[40, 80], quick=[100, 200], paper=[100, 200, 400])
seeds = choose(profile, smoke=[0, 1], quick=list(range(6)), paper=list(range(8)))
n_mc = choose(profile, smoke=4000, quick=30000, paper=100000)
mc_seeds = choose(profile, smoke=[0, 1], quick=[0, 1, 2], paper=[0, 1, 2])
n_baseline = choose(profile, smoke=500_000, quick=8_000_000, paper=16_000_000)

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
T = 3
sigma = activation("linear")
rows = []
for (Q0, Q, M, Delta) in [(2.0, 0.7, 0.9, 0.5), (2.0, 1.3, 1.4, 0.0), (1.5, 0.2, 0.3, 2.0)]:
    pre = EffectivePretraining(Q0=Q0, Q=Q, M=M)
    d_eff = Delta / 2 + Q0 + Q - 2 * M
    # direct Monte Carlo of eq. (79), independent of the solver, in chunks
    C = np.array([[Delta / 2 + Q0, M], [M, Q]])
    Lc = np.linalg.cholesky(C)
    parts = []
    for _ in range(n_baseline // 500_000):
        x = rng.standard_normal((500_000, T, T, 2)) @ Lc.T / math.sqrt(2)
        zz = x + np.swapaxes(x, 1, 2)  # symmetric, entry variances (1 + δ_ab) C
        chi = rng.standard_normal((500_000, T))
        target = zz[..., 0] + chi[:, :, None] * chi[:, None, :] - np.eye(T)
        parts.append(((sigma(zz[..., 1]) - sigma(target)) ** 2).sum(axis=(1, 2)))
    err = np.concatenate(parts)
    p = Params(T=T, Delta=Delta, activation="linear", lam_ft=math.inf)
    solver = finetune(p, pre, n_mc=n_mc, seed=seed, progress=False)
    rows.append({"Q0": Q0, "Q": Q, "M": M, "Delta": Delta, "Delta_eff": d_eff,
                 "mc_eq79": err.mean(), "mc_se": err.std() / math.sqrt(n_baseline),
                 "solver": solver.ft_test_error, "solver_se": solver.ft_test_error_se,
                 "eq80_corrected": ((T**2 + T) * d_eff + T**2 + T) / T**2,
                 "eq80_as_printed": ((T**2 + T - 2) * d_eff + T**2 + T) / T**2})
frozen = pd.DataFrame(rows)
print(frozen.round(5).to_string(index=False))
print(f"Monte-Carlo standard error {frozen['mc_se'].max():.1e}")
assert np.all(np.abs(frozen["mc_eq79"] - frozen["eq80_corrected"]) < 5 * frozen["mc_se"])
assert np.all(np.abs(frozen["solver"] - frozen["eq80_corrected"]) < 5 * frozen["solver_se"])
assert np.all(np.abs(frozen["mc_eq79"] - frozen["eq80_as_printed"]) > 10 * frozen["mc_se"])
write_table(frozen.assign(T=T, profile=profile), data_dir / "finetune_frozen_baseline.csv")

# %% [markdown]
# ## Two-stage prediction against simulation
#
# Points: $\mathrm e=0$, softmax, $T=3$, $\kappa_0=\kappa=1$, $\Delta=0.5$, $\alpha=0.1$,
# $\alpha'=3$, $\lambda=0.1$, $\lambda'\in\{0.05,1\}$; the same with the linear activation at
# $\lambda'=0.5$; $\mathrm e=1$, softmax, $T=2$, $\kappa_0=0.5$, $\kappa=1$, $\Delta=0.5$,
# $\alpha=0.2$, $\alpha'=3$, $\lambda\in\{0.05,0.3\}$, $\lambda'=0.5$; and at the first point the
# baselines $\lambda=\infty$ (LoRA only) and $\lambda'=\infty$ (frozen). Simulations pre-train and
# fine-tune the attention at several $D$ and seeds; the $D\to\infty$ value is the weighted fit
# $a+b/D$; the theory's uncertainty is the spread over Monte-Carlo seeds.

# %%
first = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.05)
points = [first, first.replace(lam_ft=1.0), first.replace(activation="linear", lam_ft=0.5)]
points += [Params(T=2, kappa0=0.5, kappa=1, Delta=0.5, alpha=0.2, alpha_ft=3, lam=lam,
                  lam_ft=0.5, reuse=True) for lam in (0.05, 0.3)]
points += [first.replace(lam=math.inf), first.replace(lam_ft=math.inf)]

sim = cached(data_dir / "finetune_validation_simulation.csv",
             lambda: simulation_table(points, Ds, seeds, progress=progress), profile, recompute)
theory = cached(data_dir / "finetune_validation_theory.csv",
                lambda: pd.concat([theory_table(points, state_evolution, n_mc=n_mc, seed=s,
                                                progress=False) for s in mc_seeds]),
                profile, recompute)
print("simulations converged:", sim["converged"].mean(), " theory converged:", theory["converged"].all())
assert sim["converged"].all() and theory["converged"].all()

# %%
keys = ["T", "kappa0", "Delta", "alpha", "lam", "lam_ft", "activation", "reuse"]
observables = ["ft_test_error", "ft_train_error", "overlap", "forgetting_error", "q", "m"]
agreement = agreement_table(sim, theory, keys, observables)
pd.set_option("display.width", 220)
print(agreement.round(4).to_string(index=False))
write_table(agreement.assign(profile=profile), data_dir / "finetune_validation_agreement.csv")

# %% [markdown]
# Replicon values (eqs. 75 corrected and 78) at every point: below 1 means the replica-symmetric
# fixed point is locally stable.

# %%
rep = theory.groupby(keys, sort=False, dropna=False)[["info_pre_replicon", "info_ft_replicon"]].mean()
rep = rep.reset_index().rename(columns={"info_pre_replicon": "pretrain_replicon_75_corrected",
                                        "info_ft_replicon": "finetune_replicon_78"})
print(rep.round(4).to_string(index=False))
write_table(rep.assign(profile=profile), data_dir / "finetune_replicon.csv")

# %% [markdown]
# Agreement criterion (fixed in advance, as for the pre-training): all $|z|$ below the Bonferroni
# threshold of a family-wise error of 1% for Student-$t$ statistics with the simulations' degrees
# of freedom. Comparisons with a vanishing simulation spread (the frozen baseline's $q=m=0$) are
# excluded.

# %%
threshold, bad = check_agreement(agreement)
valid = agreement[agreement["sim_inf_se"] > 0]
print(f"threshold |z| < {threshold:.2f} ({len(valid)} comparisons); largest |z| = "
      f"{np.abs(valid['z']).max():.2f}; {len(bad)} above")
assert bad.empty, bad

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
save_figure(fig, fig_dir / "finetune_validation")
