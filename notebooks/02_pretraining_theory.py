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
# # Pre-training theory: spectral functions, proximal and state evolution (Results 1–4, App. A.2, A.3, A.6)
#
# The pre-training of the extensive-rank weights $W$ is characterised by three order parameters
# $(Q, M, V)$, the fixed point of eqs. (46)–(54): Monte-Carlo averages of a proximal operator
# (output channel) and free-probability integrals (input channel). This notebook builds each
# piece, checks it numerically, and compares the state evolution with finite-$D$ simulations of
# the attention (`hdlora.simulation.experiment`).
#
# Parameters (papermill): the base point (`T`, `kappa0`, `kappa`, `Delta`, `alpha`,
# `activation`) with its values of λ (`lams`) and the `variants` of the validation (overrides of
# the base point); the sizes `Ds`, `seeds`, `n_mc`, `mc_seeds`, `D_eig`, `n_lam` (None: the
# `profile`'s values); `out_dir` (None: `build/runs/02_pretraining_theory/`), `seed`, `progress`,
# `recompute` (ignore cached tables).

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
# the base point of the validation and of the λ curve
T = 3
kappa0 = 1.0
kappa = 1.0
Delta = 0.5
alpha = 0.1
activation = "softmax"
lams = [0.01, 0.1, 1.0]
# further validation points: overrides of the base point
variants = [
    {"T": 2, "kappa0": 0.5, "alpha": 0.2, "lam": 0.05},
    {"T": 2, "kappa0": 0.5, "alpha": 0.2, "lam": 0.3},
    {"Delta": 2.0, "lam": 0.1},
    {"activation": "linear", "lam": 0.05},
    {"activation": "linear", "lam": 0.3},
]
lam_range = [0.005, 1.0]  # the λ curve
spectral_cases = [[1.0, 0.3], [0.5, 0.1]]  # (κ0, η) of the spectral checks
replicon_Deltas = [0.0, 2.0]  # the linear replicon scan (with replicon_alphas, replicon_lams)
replicon_alphas = None
replicon_lams = None
Ds = None
seeds = None
n_mc = None
mc_seeds = None
D_eig = None
n_lam = None

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from hdlora import Params
from hdlora.harness.agreement import agreement_table, bias_power, check_agreement
from hdlora.harness.run import Run
from hdlora.model.activations import softmax_rows
from hdlora.simulation import simulate
from hdlora.theory import pretrain, spectral
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.symmetric import multiplicity, to_matrix

run = Run("02_pretraining_theory", out_dir, profile, recompute, executor)
D_eig = run.choose(D_eig, smoke=400, quick=1500, paper=3000)
Ds = run.size("Ds_validation", Ds)
seeds = run.choose(seeds, smoke=list(range(6)), quick=list(range(6)), paper=list(range(8)))
# randomised quasi-Monte Carlo: one seed, standard errors from its independent blocks
n_mc = run.size("n_mc_validation", n_mc)
mc_seeds = run.size("mc_seeds_validation", mc_seeds)
n_lam = run.choose(n_lam, smoke=4, quick=12, paper=20)
replicon_alphas = run.choose(replicon_alphas, smoke=[0.05], quick=[0.05, 0.2], paper=[0.05, 0.1, 0.2])
replicon_lams = run.choose(replicon_lams, smoke=[0.003, 0.3], quick=[0.003, 0.03, 0.3],
                           paper=[0.001, 0.003, 0.03, 0.3])
# every point is validated now (a bad value fails here, with the Params message)
base = Params(T=T, kappa0=kappa0, kappa=kappa, Delta=Delta, alpha=alpha, lam=lams[0],
              activation=activation)
points = [base.replace(lam=lam) for lam in lams] + [base.replace(**v) for v in variants]

# %% [markdown]
# ## Results 1–4 in brief
#
# **Test law (Result 1, eq. 13).** On a fresh sequence the pre-activations of target and student
# are jointly Gaussian, independently for each $a\le b$:
# $(z^*_{ab}, z_{ab})\sim\mathcal N\big(0,(1+\delta_{ab})\big(\begin{smallmatrix}\Delta/2+Q_0&M\\M&Q\end{smallmatrix}\big)\big)$.
#
# **Train law (Result 2, eqs. 15–17).** On a training sequence, $z=\mathrm{Prox}(z^*,\tilde z)$ with
# $(z^*,\tilde z)\sim\mathcal Q$ and
# $$\mathrm{Prox}(z^*,\tilde z)=\operatorname*{arg\,max}_{h\in\mathscr S(T)}\Psi(h;z^*,\tilde z),\qquad
# \Psi(h;z^*,\tilde z)=-\|\sigma(h)-\sigma(z^*)\|_F^2-\sum_{a\le b}\frac{(\tilde z_{ab}-h_{ab})^2}{2V(1+\delta_{ab})}. \tag{15, 41–42}$$
#
# **Errors (Result 3, eqs. 19–20, 55).** $\mathcal E=\mathbb E_{\mathcal Q}\|\sigma(z)-\sigma(z^*)\|_F^2$ and
# $\mathcal L=\mathbb E_{\mathcal R}\|\sigma(z)-\sigma(z^*)\|_F^2$.
#
# **Order parameters (Result 4, eqs. 21, 44–45).** $(Q,M,V)$ extremise the free entropy
# $$\Phi=-\tfrac1{2\alpha}M\hat M+\tfrac1{4\alpha}(Q\hat V-V\hat Q)+\tfrac{\hat M^2}{4\alpha\hat V}J\Big(\tfrac{\hat Q^{1/2}}{\hat M},\tfrac{2\sqrt\kappa\lambda}{\hat M}\Big)+\mathbb E\max_h\Psi,$$
# with $J(\eta,\epsilon)=\int_\epsilon^\infty(x-\epsilon)^2\mu_\eta(\mathrm dx)$ and
# $\mu_\eta=\mu_0\boxplus\mu_{\mathrm{sc},\eta}$ ($\mu_0$ the Marchenko–Pastur law of $S^*/\sqrt D$,
# $\mu_{\mathrm{sc},\eta}$ the semicircle of radius $2\eta$). Its stationarity conditions are the
# state evolution (46)–(54): with $A_0=Q_0+\Delta/2$, $B=Q-M^2/A_0$, $s_{ab}=1+\delta_{ab}$ and
# $z^*_{ab}=\sqrt{s_{ab}A_0}\,g_{ab}$, $\tilde z_{ab}=\sqrt{s_{ab}}(Mg_{ab}/\sqrt{A_0}+\sqrt B\zeta_{ab})$,
# $$\hat M=\tfrac{2\alpha}V\mathbb E\sum_{a\le b}\tfrac{h_{ab}-\tilde z_{ab}}{\sqrt{s_{ab}}}\Big(\tfrac{g_{ab}}{\sqrt{A_0}}-\tfrac{M\zeta_{ab}}{A_0\sqrt B}\Big),\quad
# \hat Q=\tfrac{2\alpha}{V^2}\mathbb E\sum_{a\le b}\tfrac{(h_{ab}-\tilde z_{ab})^2}{s_{ab}},\quad
# \hat V=-\tfrac{2\alpha}{V\sqrt B}\mathbb E\sum_{a\le b}\tfrac{h_{ab}-\tilde z_{ab}}{\sqrt{s_{ab}}}\zeta_{ab} \tag{49–51}$$
# $$Q=\tfrac{\hat M^2}{\hat V^2}J,\qquad V=\tfrac{1}{2\hat V\eta}J_1,\qquad M=\tfrac{\hat M}{2\hat V}\big[2J-\eta J_1-\epsilon J_2\big],\qquad \eta=\tfrac{\sqrt{\hat Q}}{\hat M},\ \epsilon=\tfrac{2\sqrt\kappa\lambda}{\hat M}. \tag{52–54}$$
#
# `hdlora.theory.pretrain` solves this with one fixed set of Monte-Carlo samples (common random
# numbers: the map is deterministic), an Anderson-accelerated fixed point (`hdlora.theory.fixed_point`),
# the batched Newton proximal (`hdlora.theory.prox`) and the spectral functions (`hdlora.theory.spectral`).

# %% [markdown]
# ## The spectral law $\mu_\eta$ and $J$
#
# The Stieltjes transform of $\mu_\eta$ solves a cubic (see `hdlora.theory.spectral`); the density is
# $|\operatorname{Im} g|/\pi$. Below, the density against the eigenvalues of
# $S^*/\sqrt D+\eta\,\mathrm{GOE}$ at finite $D$, the moments, and $J$ against the eigenvalues.

# %%
rng = np.random.default_rng(seed)
spec_rows = []
fig, axes = plt.subplots(1, len(spectral_cases), figsize=(4.5 * len(spectral_cases), 3.4), squeeze=False)
for ax, (k0, eta) in zip(axes[0], spectral_cases, strict=True):
    P0 = int(k0 * D_eig)
    W = rng.standard_normal((D_eig, P0))
    A = rng.standard_normal((D_eig, D_eig))
    ev = np.linalg.eigvalsh(W @ W.T / math.sqrt(P0 * D_eig) + eta * (A + A.T) / math.sqrt(2 * D_eig))
    ax.hist(ev, bins=80, density=True, alpha=0.4, label=f"eigenvalues, $D={D_eig}$")
    for lo, hi in spectral.support(eta, k0):
        x = np.linspace(lo, hi, 400)
        ax.plot(x, spectral.density(x, eta, k0), "k-", lw=1, label="$\\rho_\\eta$ (cubic root)")
    ax.set_title(f"$\\mu_\\eta$, $\\kappa_0={k0}$, $\\eta={eta}$")
    ax.set_xlabel("$x$")
    ax.legend(fontsize=8)
    m0, m1, m2 = spectral.moments(eta, k0)
    assert abs(m0 - 1) < 1e-10 and abs(m1 - math.sqrt(k0)) < 1e-10
    assert abs(m2 - (1 + k0 + eta**2)) < 1e-10
    for eps in (0.0, 1.0, 2.5):
        J, J1, J2 = spectral.J(eta, eps, k0)
        emp = np.mean(np.maximum(ev - eps, 0) ** 2)
        spec_rows.append({"kappa0": k0, "eta": eta, "eps": eps, "J": J, "J_eigenvalues": emp,
                          "J1": J1, "J2": J2, "D": D_eig, "seed": seed})
fig.tight_layout()
run.save(fig, "pretrain_spectral_density")
plt.show()
spec = pd.DataFrame(spec_rows)
assert np.all(np.abs(spec["J"] - spec["J_eigenvalues"]) < 0.02 * spec["J"] + 2e-3)  # O(1/D)
run.write(spec, "pretrain_spectral_checks")
spec.round(5)

# %% [markdown]
# ## The proximal and its two limits (§3.1)
#
# If $V\to0$, $\mathrm{Prox}(z^*,\tilde z)=\tilde z$: train pre-activations are distributed like test
# ones. If $V\to\infty$, $\sigma(\mathrm{Prox})=\sigma(z^*)$: the attention fits the training data.
# The softmax proximal is solved for all samples at once by damped Newton from several starts.
# At very large $V$ the objective is almost flat (the penalty is negligible and saturated softmax
# rows barely react), so starts end at different points of a near-flat valley, counted in
# `starts_disagree`; the train error $\mathbb E\|\sigma(\mathrm{Prox})-\sigma(z^*)\|^2$ still goes to 0.

# %%
s = multiplicity(T)
A0 = 1 + kappa0 + Delta / 2  # Q0 + Δ/2; the channel point (M, B) = (0.5 √A0, 0.36) is arbitrary
g, zeta = rng.standard_normal((2, 5000, len(s)))
zs, zt = np.sqrt(A0 * s) * g, np.sqrt(s) * (0.5 * g + 0.6 * zeta)
lim_rows = []
for V in (1e-8, 1e-2, 1.0, 1e2, 1e4, 1e6, 1e8):
    r = pretrain_prox(zs, zt, V, T)
    diff = softmax_rows(to_matrix(r.h, T)) - softmax_rows(to_matrix(zs, T))
    lim_rows.append({"V": V, "max|Prox - z_tilde|": np.abs(r.h - zt).max(),
                     "max|s(Prox) - s(z*)|": np.abs(diff).max(),
                     "E||s(Prox) - s(z*)||^2": (diff**2).sum(axis=(1, 2)).mean(),
                     "failed": r.n_failed, "starts_disagree": r.n_disagree,
                     "newton_iterations": r.n_iter})
limits = pd.DataFrame(lim_rows)
display(limits)
assert limits["max|Prox - z_tilde|"].iloc[0] < 1e-6  # V -> 0: Prox = z_tilde
fit = limits["E||s(Prox) - s(z*)||^2"].to_numpy()
assert np.all(np.diff(fit[2:]) < 0) and fit[-1] < 1e-10  # V -> oo: the data are fit
assert (limits["failed"] == 0).all()

# %% [markdown]
# ## Erratum: the replicon condition (75)
#
# As printed,
# $2\alpha\,\mathbb E\|(V\nabla^2\Psi)^{-1}+I_L\|_F^2\int\!\!\int\mu(\mathrm dx)\mu(\mathrm dy)\frac{(\zeta(x)-\zeta(y))^2}{\hat V^2(x-y)^2}<1$.
# Compare with the fine-tuning condition (78), $\alpha'\mathbb E\|(v\nabla^2\psi)^{-1}+I_T\|_F^2<1$,
# whose input channel is a ridge (linear) denoiser. Two things are off in (75):
#
# 1. **Normalisation of the input factor.** $V$ of eq. (53) is the *mean derivative* of the input
#    denoiser $\hat S=\zeta(\cdot)/\hat V$: $V=\hat V^{-1}\int\!\!\int\frac{\zeta(x)-\zeta(y)}{x-y}\mu(\mathrm dx)\mu(\mathrm dy)$
#    (both sides equal $J_1/(2\hat V\eta)$; checked below). The output factor of a replicon
#    condition is $\mathbb E\|\partial_\omega g_{\rm out}\|^2=\mathbb E\|(V\nabla^2\Psi)^{-1}+I\|^2/V^2$,
#    so the input factor must be divided by $V^2$; then a linear denoiser gives back the form of (78).
# 2. **Coordinates.** In the entries $h_{ab}$ the penalty has weights $1/(2Vs_{ab})$, so
#    $V\nabla^2\Psi\to-\mathrm{diag}(1/s_{ab})$ as $V\to0$ and $(V\nabla^2\Psi)^{-1}+I\to\mathrm{diag}(1-s_{ab})\ne0$.
#    In $u_{ab}=h_{ab}/\sqrt{s_{ab}}$ (the coordinates of eq. 47) the penalty is isotropic and the
#    limit is $-I_L$, as in (78).
#
# Corrected: $2\alpha\,\mathbb E\|(V\nabla_u^2\Psi)^{-1}+I_L\|_F^2\,\int\!\!\int\frac{(\zeta(x)-\zeta(y))^2}{(x-y)^2}\mathrm d\mu\,\mathrm d\mu\,/(\hat VV)^2<1$.
# The test: with the linear activation the pre-training is a convex problem in $S=WW^\top\succeq0$
# ($\kappa\ge1$), so it must be replica-symmetric stable at every $\lambda$. The printed form says
# it is unstable (values in the thousands at small $\lambda$); the corrected one stays below 1.

# %%
rep_points = [base.replace(activation="linear", alpha=a, Delta=d, lam=l)
              for a in replicon_alphas for d in replicon_Deltas for l in replicon_lams]
rep = run.solve("pretrain_replicon_linear", pretrain, rep_points, seeds=[seed],
                n_mc=min(n_mc, 20000), progress=progress)
eta = np.sqrt(rep["Q_hat"]) / rep["M_hat"]
eps = 2 * np.sqrt(rep["kappa"]) * rep["lam"] / rep["M_hat"]
J1 = np.array([spectral.J(e, x, k)[1] for e, x, k in zip(eta, eps, rep["kappa0"], strict=True)])
rep["V_from_J1"] = J1 / (2 * rep["V_hat"] * eta)
rep = rep.rename(columns={"replicon": "replicon_corrected",
                          "info_replicon_paper_normalisation": "replicon_as_printed"})
assert np.allclose(rep["V"], rep["V_from_J1"], rtol=1e-5)  # the fixed point satisfies (53)
assert (rep["replicon_corrected"] < 1).all()
assert (rep["replicon_as_printed"] > 1).any()
rep[["alpha", "Delta", "lam", "V", "V_from_J1", "replicon_corrected", "replicon_as_printed"]].round(4)

# %% [markdown]
# The identity behind point 1, $\int\!\!\int\frac{\zeta(x)-\zeta(y)}{x-y}\mathrm d\mu\,\mathrm d\mu=J_1/(2\eta)$,
# checked by direct double quadrature (`hdlora.theory.spectral` computes $J_1$ from the Hilbert transform):

# %%
ident_rows = []
for eta, eps in [(0.5, 1.0), (1.2, 0.3)]:
    sup = spectral.support(eta, 1.0)
    lo, hi = sup[0][0], sup[-1][1]
    nodes, weights = np.polynomial.legendre.leggauss(400)
    x = lo + (hi - lo) * (nodes + 1) / 2
    w = (hi - lo) / 2 * weights * spectral.density(x, eta, 1.0)
    zeta_x = np.maximum(x - eps, 0)
    dx = x[:, None] - x[None, :]
    dd = np.where(np.abs(dx) > 0, (zeta_x[:, None] - zeta_x[None, :]) / np.where(dx == 0, 1, dx),
                  (x[:, None] > eps) * 1.0)
    lhs = w @ dd @ w
    rhs = spectral.J(eta, eps, 1.0)[1] / (2 * eta)
    ident_rows.append({"eta": eta, "eps": eps, "double integral": lhs, "J1/(2 eta)": rhs})
    assert abs(lhs - rhs) < 1e-3
pd.DataFrame(ident_rows)

# %% [markdown]
# ## State evolution against simulation
#
# The points of the validation (softmax unless stated, $\kappa=1$): $T=3$, $\kappa_0=1$,
# $\Delta=0.5$, $\alpha=0.1$, $\lambda\in\{0.01,0.1,1\}$; $T=2$, $\kappa_0=0.5$, $\Delta=0.5$,
# $\alpha=0.2$, $\lambda\in\{0.05,0.3\}$; $T=3$, $\Delta=2$, $\lambda=0.1$; linear, $T=3$,
# $\Delta=0.5$, $\lambda\in\{0.05,0.3\}$. Simulations: L-BFGS on eq. (2), several seeds at each $D$;
# the $D\to\infty$ value is the weighted fit $a+b/D$ of the seed means. Theory: randomised
# quasi-Monte Carlo; its standard error comes from independent randomisations (the record's
# `_se` fields), or from the spread over seeds when `mc_seeds` holds several.

# %%
points = [base.replace(lam=lam) for lam in lams] + [base.replace(**v) for v in variants]
sim = run.solve("pretrain_validation_simulation", simulate, points, seeds=seeds, grid={"D": Ds},
                finetune=False, progress=progress)
theory = run.solve("pretrain_validation_theory", pretrain, points, seeds=mc_seeds, n_mc=n_mc,
                   progress=progress)
assert sim["converged"].all() and theory["converged"].all()

# %%
keys = ["T", "kappa0", "Delta", "alpha", "lam", "activation"]
observables = ["test_error", "train_error", "Q", "M"]
agreement = agreement_table(sim, theory, keys, observables)
run.write(agreement, "pretrain_validation_agreement")
cols = [*keys, "observable", "sim_inf", "sim_inf_se", "theory", "theory_se", "z", "rel_dev"]
agreement[cols].round(4)

# %% [markdown]
# Agreement criterion, fixed before looking at the data (`hdlora.harness.agreement`):
#
# 1. **per comparison**, $z$ (extrapolated simulation minus theory, over both standard errors, the
#    simulation's from that point's own seeds) must stay below the Bonferroni threshold of
#    Student's $t$ with the point's degrees of freedom, at a family-wise error of 0.5%;
# 2. **per observable**, the mean relative deviation over the points must stay below its
#    Bonferroni threshold (0.5%) in units of its standard error: this part catches a bias
#    common to all points — a factor, a normalisation. Seed $s$ draws one teacher for every
#    point, so the points' deviations are correlated (a teacher with an unlucky norm moves them
#    all); the standard error is therefore the spread, across the independent seeds, of each
#    seed's mean deviation over the points ($n_{\rm seeds}-1$ degrees of freedom,
#    `hdlora.harness.agreement.mean_deviation_se`).
#
# Non-finite values fail; exact zeros (the zero predictor's $Q=M=0$ at every $D$) are excluded
# and counted. The **power** printed below is the smallest uniform relative bias of the theory
# table that the check rejects (scanned, both signs). The zero-predictor point ($\lambda=1>\lambda_c$)
# has no $1/D$ trend in its errors; the extrapolation only widens their error bar.

# %%
check = check_agreement(agreement)
power = bias_power(sim, theory, keys, observables)
print(check.summary())
print(f"power: the check rejects a uniform bias of the theory of {power:.1%} or more")
assert check.passed, check.failures
assert power <= 0.10  # a 10 % error in the theory cannot pass
check.by_observable.round(4)

# %% [markdown]
# ## Errors and order parameters against $\lambda$
#
# Theory curves for the base point (by default $T=3$, $\kappa_0=\kappa=1$, $\Delta=0.5$, $\alpha=0.1$, softmax), with the
# simulations of the table above. Past $\lambda_c$ the zero predictor $\hat W=0$ is the fixed point.

# %%
lam_grid = np.geomspace(lam_range[0], lam_range[1], n_lam)
curve = run.solve("pretrain_lambda_curve_theory", pretrain,
                  [base.replace(lam=float(x)) for x in lam_grid], seeds=[seed], n_mc=n_mc,
                  progress=progress)
fam = sim[(sim["T"] == T) & (sim["kappa0"] == kappa0) & (sim["alpha"] == alpha)
          & (sim["Delta"] == Delta) & (sim["activation"] == activation)]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for ax, cols, title in [(axes[0], ["test_error", "train_error"], "errors"),
                        (axes[1], ["Q", "M"], "order parameters"), (axes[2], ["V"], "V")]:
    for col in cols:
        line, = ax.plot(curve["lam"], curve[col], "-", label=f"{col} (theory)")
        if col in fam and fam[col].notna().any():
            for D, mk in zip(Ds, ["s", "o", "^"], strict=False):
                st = fam[fam["D"] == D].groupby("lam")[col].agg(["mean", "std", "count"])
                ax.errorbar(st.index, st["mean"], st["std"] / np.sqrt(st["count"]), fmt=mk, ms=4,
                            color=line.get_color(), mfc="none", label=f"{col}, D={D}")
    ax.set_xscale("log")
    ax.set_xlabel("$\\lambda$")
    ax.set_title(title)
    ax.legend(fontsize=7)
fig.suptitle(f"Pre-training: $T={T}$, $\\kappa_0={kappa0:g}$, $\\kappa={kappa:g}$, "
             f"$\\Delta={Delta:g}$, $\\alpha={alpha:g}$, {activation}", fontsize=10)
fig.tight_layout()
run.save(fig, "pretrain_validation")
plt.show()
