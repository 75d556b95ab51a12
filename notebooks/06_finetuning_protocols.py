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
# # The experiments of §4: fine-tuning from a given pre-training, active fine-tuning, recalibration, and the simulator's minima
#
# Figures 2, 4, 5 and 6 rest on three protocols that this notebook validates, theory against
# simulation, before the figure notebooks use them:
#
# 1. **Fine-tuning from a given pre-training** (Figs. 2, 4, 5). The fine-tuning sees the frozen
#    map only through $(Q_0,Q,M)$: on fresh sequences ($\mathrm e=0$) the frozen pre-activations
#    $(z^*,z)$ follow the Gaussian law $\mathcal Q$ of Result 1. The theory solves Result 5 on an
#    `EffectivePretraining(Q0, Q, M)`; the simulator `simulate_finetune` fine-tunes $w$ on
#    $N'=\alpha'D$ sequences whose frozen fields are drawn from $\mathcal Q$ with those overlaps
#    (no pre-training run). We check the shortcut against the full two-stage simulation at
#    matched overlaps, then the theory against the shortcut at three points.
# 2. **Active fine-tuning, Algorithm 1** (Fig. 4): the $N'$ best of $\bar N'=N'/\rho$ candidates
#    by $\|\sigma(z_\mu)-\sigma(0)\|_F^2$; the theory conditions $\mathcal Q$ as App. D says. We
#    check the conditional noise variance of the selected set against eq. (28) and the
#    theory, and $\mathcal E'$, $o_w$ at two labelling ratios.
# 3. **Recalibration** $\hat W\to\sqrt\beta\,\hat W$ (eq. 26, Fig. 6): the full pipeline at two
#    values of $\beta$, and for linear $\sigma$ the optimum $\beta^*=M/Q$.
# 4. **The simulator's minima.** The LoRA objective (3) is not convex. Where do random L-BFGS
#    starts fail to find the lowest minimum, as a function of $D$? And does the default
#    `simulate_finetune` find the same minimum as the best of many starts (including a start at
#    the teacher $w^*$, a validation device) at the replicon-stable validation points?
#
# Every agreement uses the criterion of notebooks 02–03 (`hdlora.harness.agreement`): per
# point a Bonferroni Student-$t$ test on the point's own seeds, per observable a test of a
# common relative bias with the standard error across seeds.
#
# Parameters (papermill): `T`, `activation`, `lam_ft`, `alpha_ft`; the effective pre-trainings
# `points` (Δ, Δ_eff) with `M`; the active `rhos` at (`active_Delta`, `active_delta_eff`); the
# two-stage point (`Delta`, `alpha`, `lam`, `kappa0`, `kappa`) with `beta_scales`; the map of
# minima at (`map_T`, `map_alpha_ft`, `map_effective`, `map_lam_fts`); sizes `n_mc`, `Ds`,
# `seeds`, `two_stage_Ds` (the shortcut check and the recalibration), `map_Ds`, `map_n_random`
# (None: the profile's), `map_seeds`, `map_replicon_seeds`, `map_basin_hops`; `profile`,
# `out_dir`, `seed`, `progress`, `recompute`.

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
T = 3
activation = "softmax"
lam_ft = 0.5
alpha_ft = 3.0
M = 1.0
points = [[0.0, 1.0], [2.0, 2.0], [0.5, 3.0]]  # (Δ, Δ_eff) of the effective pre-trainings
rhos = [0.1, 0.3]  # active fine-tuning
active_Delta = 0.0
active_delta_eff = 2.0
Delta = 0.5  # the two-stage point of the recalibration
alpha = 0.1
lam = 0.1
kappa0 = 1.0
kappa = 1.0
beta_scales = [0.8, 1.2]  # β/β*, β* = M/Q of the state evolution
map_T = 2  # the map of the simulator's minima (the example)
map_alpha_ft = 2.0
map_effective = [1.5, 1.0, 0.9]  # (Q0, Q, M)
map_lam_fts = [0.1, 0.5]
n_mc = None
Ds = None
seeds = None
two_stage_Ds = None
map_Ds = None
map_n_random = None
map_seeds = None
map_replicon_seeds = None
map_basin_hops = None  # the most moves of the map's searches (None: the simulators' default)

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from scipy import stats

from hdlora import EffectivePretraining, Params
from hdlora.diagnostics import StartsDisagreeWarning
from hdlora.harness.agreement import agreement_table, check_agreement, fit_intercept
from hdlora.harness.run import Run
from hdlora.simulation import recalibration_scan, simulate, simulate_finetune
from hdlora.theory import finetune, noise, state_evolution

run = Run("06_finetuning_protocols", out_dir, profile, recompute, executor)
n_mc = run.choose(n_mc, smoke=1024, quick=16384, paper=32768)
Ds = run.choose(Ds, smoke=[40], quick=[200, 400], paper=[500, 1000, 2000])
seeds = run.choose(seeds, smoke=[0, 1], quick=[0, 1, 2, 3], paper=list(range(8)))
two_stage_Ds = run.choose(two_stage_Ds, smoke=[30], quick=[60, 120], paper=[100, 200, 400])
map_Ds = run.choose(map_Ds, smoke=[40], quick=[50, 100, 200, 400], paper=[50, 100, 200, 400, 800])
map_n_random = run.choose(map_n_random, smoke=3, quick=8, paper=16)
map_seeds = run.choose(map_seeds, smoke=[0, 1], quick=list(range(8)), paper=list(range(20)))
map_replicon_seeds = run.choose(map_replicon_seeds, smoke=[0, 1], quick=list(range(8)),
                                paper=list(range(16)))
mc_seeds = [seed]
base = Params(T=T, lam_ft=lam_ft, alpha_ft=alpha_ft, activation=activation)
effective_points = [(base.replace(Delta=float(d)), EffectivePretraining.on_diagonal(float(x),
                                                                                   float(d), M))
                    for d, x in points]
two_stage = Params(T=T, kappa0=kappa0, kappa=kappa, Delta=Delta, alpha=alpha, alpha_ft=alpha_ft,
                   lam=lam, lam_ft=lam_ft, activation=activation)
map_params = Params(T=map_T, alpha_ft=map_alpha_ft, activation=activation)
map_eff = EffectivePretraining(*map_effective)
keys_eff = ["Delta", "Q0", "Q", "M", "alpha_ft", "lam_ft"]


def solve_each(name, solver, jobs, **kwargs):
    """``solver(params, effective, ...)`` for each (params, effective) of ``jobs``, as one table
    cached under the jobs and the solver's code."""
    arg = "effective" if solver is simulate_finetune else "pretrain_result"  # finetune's name
    return run.solve_jobs(name, solver, [dict(point=p, grid={arg: [e]}) for p, e in jobs],
                          progress=progress, **kwargs)


# %% [markdown]
# ## 1. Fine-tuning from a given pre-training
#
# ### The shortcut against the full two-stage simulation
#
# Each two-stage run (pre-training by L-BFGS at dimension $D$, then the LoRA) measures its own
# $(Q_0,Q,M)$; `simulate_finetune` at those overlaps (same seed, independent data) describes the
# same fine-tuning as $D\to\infty$. At finite $D$ they differ: the real frozen field
# $D^{-1}X\hat SX^\top$ contains a part proportional to the Gram matrix $G=XX^\top/D$ (since
# $\hat S$ has a large identity component), so it is correlated with $G$ and with
# $\chi^*\chi^{*\top}$, which the Gaussian law $\mathcal Q$ drops. The difference of
# $\mathcal E'$ was measured to fall like $D^{-1/2}$ (0.023, 0.015, 0.010 at $D$ = 60, 120, 240;
# `tests/test_simulate_finetune.py`). So the check is on the difference of the run means at each
# $D$ of `two_stage_Ds`, extrapolated to $D\to\infty$ in $D^{-1/2}$ (weighted least squares,
# `hdlora.harness.agreement.fit_intercept`): the intercept must vanish.

# %%
full = run.solve("protocols_two_stage", simulate, [two_stage], seeds=seeds,
                 grid={"D": two_stage_Ds}, progress=progress)
matched = [(two_stage, EffectivePretraining(Q0=r.Q0, Q=r.Q, M=r.M), int(r.seed), int(r.D))
           for r in full.itertuples()]


short = run.solve_jobs("protocols_shortcut_matched", simulate_finetune,
                       [dict(point=p, seeds=[s], grid={"effective": [e], "D": [D_]})
                        for p, e, s, D_ in matched], progress=progress)
rows = []
for col in ["ft_test_error", "overlap", "q", "m", "forgetting_error"]:
    a = full.groupby("D")[col].agg(["mean", "std", "count"])
    b = short.groupby("D")[col].agg(["mean", "std", "count"])
    diff = a["mean"] - b["mean"]
    se = np.hypot(a["std"] / np.sqrt(a["count"]), b["std"] / np.sqrt(b["count"]))
    inf, inf_se = fit_intercept(1 / np.sqrt(diff.index.to_numpy(float)), diff.to_numpy(),
                                se.to_numpy())
    rows.append({"observable": col, **{f"diff D={D_}": d for D_, d in diff.items()},
                 **{f"se D={D_}": e for D_, e in se.items()}, "diff D=inf": inf,
                 "se D=inf": inf_se, "z": inf / inf_se})
shortcut_check = pd.DataFrame(rows)
run.write(shortcut_check, "protocols_shortcut_check")
display(shortcut_check.round(4))
# Bonferroni over the five comparisons at family error 1 %, Student t with the runs' dof
threshold = stats.t.ppf(1 - 0.01 / (2 * len(rows)), max(2 * (len(seeds) - 1), 1))
assert profile == "smoke" or (shortcut_check["z"].abs() < threshold).all(), shortcut_check

# %% [markdown]
# ### The theory against the shortcut at three effective pre-trainings
#
# At $(\Delta,\Delta_{\rm eff})$ = `points` with $M=1$, $Q_0=Q$: the theory (Result 5) and the
# simulations at the dimensions `Ds`, extrapolated in $1/D$ when there are several.

# %%
def sims_over_D(name, jobs, **kwargs):
    return run.solve_jobs(name, simulate_finetune,
                          [dict(point=p, grid={"effective": [e], "D": Ds}) for p, e in jobs],
                          seeds=seeds, progress=progress, **kwargs)


sim_eff = sims_over_D("protocols_effective_simulation", effective_points)
th_eff = solve_each("protocols_effective_theory", finetune, effective_points, seeds=mc_seeds,
                    n_mc=n_mc)
observables = ["ft_test_error", "overlap", "q", "m", "forgetting_error"]
agree_eff = agreement_table(sim_eff, th_eff, keys_eff, observables)
run.write(agree_eff, "protocols_effective_agreement")
display(agree_eff[[*keys_eff, "observable", "sim_inf", "sim_inf_se", "theory", "theory_se",
                   "z"]].round(4))
check_eff = check_agreement(agree_eff)
print(check_eff.summary())
print("replicon (78) at the points:", th_eff["ft_replicon"].round(3).tolist())
assert profile == "smoke" or check_eff.passed, check_eff.failures

# %% [markdown]
# ## 2. Active fine-tuning (Algorithm 1)
#
# At $\Delta=$`active_Delta`, $\Delta_{\rm eff}=$`active_delta_eff`, $\alpha'=$`alpha_ft` labelled
# samples chosen among $\bar N'=N'/\rho$ candidates, for each $\rho$ of `rhos`. First the noise
# of the training set: the simulation's measured
# $\hat\Delta_{\rm eff}=\mathrm{mean}_{a\le b}(z-z^*)^2_{ab}/(1+\delta_{ab})$ on the selected set,
# the theory's conditioned Monte-Carlo sample (the same statistic), and the two references,
# eq. (25) (no selection) and eq. (28) (the $z\to0$ limit).

# %%
p_act = base.replace(Delta=float(active_Delta))
eff_act = EffectivePretraining.on_diagonal(float(active_delta_eff), float(active_Delta), M)
th_act = pd.concat([
    solve_each(f"protocols_active_theory_{i}", finetune, [(p_act, eff_act)], seeds=mc_seeds,
               n_mc=n_mc, rho=float(r)).assign(rho=float(r)) for i, r in enumerate(rhos)]
    + [solve_each("protocols_uniform_theory", finetune, [(p_act, eff_act)], seeds=mc_seeds,
                  n_mc=n_mc).assign(rho=np.nan)], ignore_index=True)
sim_act = pd.concat([
    sims_over_D(f"protocols_active_simulation_{i}", [(p_act, eff_act)], rho=float(r))
    for i, r in enumerate(rhos)]
    + [sims_over_D("protocols_uniform_simulation", [(p_act, eff_act)])], ignore_index=True)
noise_rows = []
for r in [*map(float, rhos), np.nan]:
    t = th_act[th_act["rho"].isna()] if np.isnan(r) else th_act[th_act["rho"] == r]
    s = sim_act[sim_act["rho"].isna()] if np.isnan(r) else sim_act[sim_act["rho"] == r]
    noise_rows.append({
        "rho": r,
        "simulation Delta_eff_hat": s["info_Delta_eff_train"].mean(),
        "sim se": s["info_Delta_eff_train"].std() / np.sqrt(len(s)),
        "theory (conditioned samples)": float(t["info_Delta_eff_train"].iloc[0]),
        "eq. (25)": noise.delta_eff(active_Delta, eff_act.Q0, eff_act.Q, eff_act.M),
        "eq. (28)": noise.delta_eff_active(active_Delta, eff_act.Q0, eff_act.Q, eff_act.M),
    })
noise_check = pd.DataFrame(noise_rows)
run.write(noise_check, "protocols_active_noise")
display(noise_check.round(4))
rel = (noise_check["simulation Delta_eff_hat"] - noise_check["theory (conditioned samples)"]) / \
    noise_check["theory (conditioned samples)"]
assert profile == "smoke" or (rel.abs() < 0.02).all(), rel  # both are means of ~10⁴ squares

# %% [markdown]
# Then $\mathcal E'$ and $o_w$ for both selections, and the gain $\Delta\mathcal E'$ of
# Algorithm 1 in theory and simulation.

# %%
keys_act = ["rho", "Q", "alpha_ft", "lam_ft"]
agree_act = agreement_table(sim_act.assign(rho=sim_act["rho"].fillna(-1.0)),
                            th_act.assign(rho=th_act["rho"].fillna(-1.0)), keys_act,
                            ["ft_test_error", "overlap"])
run.write(agree_act, "protocols_active_agreement")
display(agree_act[[*keys_act, "observable", "sim_inf", "sim_inf_se", "theory", "theory_se",
                   "z"]].round(4))
check_act = check_agreement(agree_act)
print(check_act.summary(), "(rho = -1: the uniform selection)")
assert profile == "smoke" or check_act.passed, check_act.failures
gain = agree_act[agree_act["observable"] == "ft_test_error"].set_index("rho")
uniform = gain.loc[-1.0]
print(pd.DataFrame({r: {"theory gain": uniform["theory"] - gain.loc[r, "theory"],
                        "simulation gain": uniform["sim_inf"] - gain.loc[r, "sim_inf"]}
                    for r in map(float, rhos)}).round(4))

# %% [markdown]
# ## 3. Recalibration $\hat W\to\sqrt\beta\,\hat W$
#
# The full two-stage pipeline at `beta_scales` × $\beta^*$, with $\beta^*=M/Q$ from the
# pre-training state evolution (as App. E does): the recalibrated pre-training error
# $\mathcal E(\beta)$, the fine-tuning error and the overlap, theory against simulation. Each
# simulated run pre-trains once and fine-tunes the rescaled $\sqrt\beta\,\hat W$ for every $\beta$
# (`hdlora.simulation.recalibration_scan`), at the dimensions `two_stage_Ds`, extrapolated in
# $1/D$.

# %%
se1 = run.solve("protocols_recalibration_reference", state_evolution, [two_stage],
                seeds=mc_seeds, n_mc=n_mc, progress=progress)
beta_star = float(se1["M"].iloc[0] / se1["Q"].iloc[0])
betas = [float(s) * beta_star for s in beta_scales]
th_rec = pd.concat([run.solve(f"protocols_recalibration_theory_{i}", state_evolution,
                              [two_stage], seeds=mc_seeds, n_mc=n_mc, beta=b, progress=progress)
                    for i, b in enumerate(betas)], ignore_index=True)
sim_rec = run.solve("protocols_recalibration_simulation", recalibration_scan, [two_stage],
                    seeds=seeds, grid={"D": two_stage_Ds}, betas=betas, progress=progress)
keys_rec = ["beta", "lam", "lam_ft"]
agree_rec = agreement_table(sim_rec, th_rec, keys_rec, ["test_error", "ft_test_error", "overlap"])
run.write(agree_rec, "protocols_recalibration_agreement")
display(agree_rec[[*keys_rec, "observable", "sim_inf", "sim_inf_se", "theory", "theory_se",
                   "z"]].round(4))
check_rec = check_agreement(agree_rec)
print(f"beta* = {beta_star:.4f};", check_rec.summary())
assert profile == "smoke" or check_rec.passed, check_rec.failures

# %% [markdown]
# For linear $\sigma$, $\mathcal E(\beta)=\frac{T+1}{T}(A_0-2\beta M+\beta^2Q)$ and the fine-tuning
# depends on the pre-training only through $\Delta_{\rm eff}(\beta)$ (eq. 26): both are minimal at
# $\beta^*$. The exact (closed-form) pre-training makes the check free of Monte-Carlo noise.

# %%
from hdlora.theory import pretrain  # noqa: E402
from hdlora.theory.recalibration import recalibrated  # noqa: E402

lin = two_stage.replace(activation="linear")
pre_lin = pretrain(lin, method="exact")
grid = np.linspace(0.5, 1.5, 201) * pre_lin.M / pre_lin.Q
E_beta = [recalibrated(lin, pre_lin, b, method="exact").test_error for b in grid]
b_min = float(grid[int(np.argmin(E_beta))])
print(f"linear sigma: argmin E(beta) = {b_min:.4f}, beta* = M/Q = {pre_lin.M / pre_lin.Q:.4f}")
assert abs(b_min - pre_lin.M / pre_lin.Q) <= grid[1] - grid[0]

# %% [markdown]
# ## 4. The simulator's minima: where random starts fail
#
# At $T=$`map_T`, $\alpha'=$`map_alpha_ft`, $(Q_0,Q,M)=$`map_effective` (the example of the
# issue that prompted the multi-start simulator), for each $D$ of `map_Ds` and $\lambda'$ of
# `map_lam_fts`: `map_n_random` random starts (no spectral start), plus the teacher start
# $w=w^*$; a start *reaches the best minimum* when its objective is within $10^{-7}$ (relative)
# of the lowest one. The fraction of random starts that do, against $D$:

# %%
starts = run.solve_jobs("protocols_minima_map_starts", simulate_finetune,
                        [dict(point=map_params.replace(lam_ft=float(lf))) for lf in map_lam_fts],
                             seeds=map_seeds, grid={"effective": [map_eff], "D": map_Ds},
                             n_init=map_n_random, spectral_start=False, teacher_start=True,
                             bayes_start=False, basin_hops=0, progress=progress)


def start_columns(df):
    """Long table of the starts of each run: kind, objective, overlap, reached the best?"""
    rows = []
    for _, r in df.iterrows():
        k = 0
        objs = []
        while f"info_ft_start{k}_objective" in r and pd.notna(r[f"info_ft_start{k}_objective"]):
            objs.append((r[f"info_ft_start{k}_kind"], r[f"info_ft_start{k}_objective"],
                         r[f"info_ft_start{k}_overlap"]))
            k += 1
        best = min(o for _, o, _ in objs)
        for kind, o, ov in objs:
            rows.append({"D": r["D"], "lam_ft": r["lam_ft"], "seed": r["seed"], "kind": kind,
                         "objective": o, "overlap": ov,
                         "reached_best": bool(o - best <= 1e-7 * abs(best))})
    return pd.DataFrame(rows)


long = start_columns(starts)
summary = long.groupby(["lam_ft", "D", "kind"]).agg(
    starts=("reached_best", "size"), reached_best=("reached_best", "mean"),
    median_overlap=("overlap", "median")).reset_index()
run.write(summary, "protocols_minima_map")
display(summary.round(3))
fig, ax = plt.subplots(figsize=(5, 3.4))
for i, lf in enumerate(map_lam_fts):
    c = summary[(summary["lam_ft"] == lf) & (summary["kind"] == "random")].sort_values("D")
    ax.plot(c["D"], c["reached_best"], "o-", color=f"C{i}", label=f"$\\lambda'={lf:g}$")
ax.set_xscale("log")
ax.set_xlabel("$D$")
ax.set_ylabel("fraction of random starts\nreaching the lowest minimum")
ax.set_ylim(-0.05, 1.05)
ax.legend(fontsize=8)
ax.set_title(f"$T={map_T}$, $\\alpha'={map_alpha_ft:g}$, $(Q_0,Q,M)={tuple(map_effective)}$",
             fontsize=9)
fig.tight_layout()
run.save(fig, "protocols_minima_map")
plt.show()

# %% [markdown]
# ### Which search reaches the lowest minimum without the teacher
#
# On the same data (same seeds), three searches, each without the teacher:
#
# * **former default** (before): the starts alone, the spectral start and 3 random ones
#   (`simulate_finetune(bayes_start=False, basin_hops=0)`);
# * **basin hopping**: those starts, then at most `map_basin_hops` (None: the default, 30)
#   moves of size $2\lVert w\rVert$ from the best minimum, each kept only if it lowers the
#   objective, until 10 moves in a row found nothing lower (`bayes_start=False`,
#   `hdlora.simulation.search.basin_hop`);
# * **default** (after): the same search with one more start, the spectral start of the data's
#   own matrix $\sum_\mu X_\mu^\top K_\mu X_\mu/D$, with
#   $K_\mu = I - q_0\,\mathbb E[\chi\chi^\top\mid y_\mu]^{-1}$ and the posterior of the
#   sequence's $\chi^*_\mu$ given its labels (`bayes_spectral_start`), and no move at all where
#   the 5 starts end in one minimum (`AGREEING_STARTS`): what every simulator now runs
#   (`hdlora.simulation.search.finetune_stage`).
#
# A run *reaches the lowest minimum* when its objective is within $10^{-7}$ (relative) of the
# lowest found by any method on that data, the teacher start and the `map_n_random` random
# starts above included; the time is the median wall time of one run. Where the theory
# (Result 5 at the map's $(Q_0,Q,M)$) is replica-stable (the replicon (78), averaged over
# `map_replicon_seeds` samples, below 1 by two standard errors), the default should reach the
# lowest minimum in at least 95 % of the runs at every $D$ (with 8 runs: all of them): the
# table says where it does (`meets_95`), and lists each run where it did not with the minima
# found. Each record says whether its search had settled (none of its last 10 moves accepted;
# one that had not warns).

# %%
map_jobs = [dict(point=map_params.replace(lam_ft=float(lf))) for lf in map_lam_fts]
map_grid = {"effective": [map_eff], "D": map_Ds}
hops = {} if map_basin_hops is None else {"basin_hops": map_basin_hops}
map_searches = {
    "former default": dict(bayes_start=False, basin_hops=0),
    "basin hopping": dict(bayes_start=False, **hops),
    "default": dict(hops),
}
# the map measures how often starts end in different minima: their warnings would only repeat it
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StartsDisagreeWarning)
    searches = {method: run.solve_jobs(f"protocols_minima_map_{method.replace(' ', '_')}",
                                       simulate_finetune, map_jobs, seeds=map_seeds,
                                       grid=map_grid, progress=progress, **search)
                for method, search in map_searches.items()}
keys_map = ["lam_ft", "D", "seed"]
lowest = pd.concat([long[[*keys_map, "objective"]]]
                   + [df[keys_map].assign(objective=df["info_finetune_objective"])
                      for df in searches.values()]).groupby(keys_map)["objective"].min()
rows = []
for method, df in searches.items():
    obj = df.set_index(keys_map)["info_finetune_objective"]
    reached = (obj - lowest.loc[obj.index]) <= 1e-7 * lowest.loc[obj.index].abs()
    rows.append(pd.DataFrame({"method": method, "reached_lowest": reached,
                              "settled": df.set_index(keys_map)["info_ft_search_settled"],
                              "wall_time": df.set_index(keys_map)["wall_time"]}).reset_index())
# the replicon (78) of one state evolution is heavy-tailed here (its per-sample term
# ‖(v∇²ψ)⁻¹ + I‖² is large where a sample's proximal Hessian nearly vanishes): the mean over
# `map_replicon_seeds` independent samples, with its standard error, decides
map_theory = solve_each("protocols_minima_map_theory", finetune,
                        [(map_params.replace(lam_ft=float(lf)), map_eff) for lf in map_lam_fts],
                        seeds=map_replicon_seeds, n_mc=n_mc)
replicon = map_theory.groupby("lam_ft")["ft_replicon"].agg(
    ft_replicon="mean", ft_replicon_se=lambda x: x.std(ddof=1) / np.sqrt(len(x)),
    ft_replicon_min="min", ft_replicon_max="max").reset_index()
replicon["replica_stable"] = replicon["ft_replicon"] + 2 * replicon["ft_replicon_se"] < 1
display(replicon.round(3))
search_map = (pd.concat(rows).groupby(["method", "lam_ft", "D"])
              .agg(runs=("reached_lowest", "size"), reached_lowest=("reached_lowest", "mean"),
                   settled=("settled", "mean"), median_wall_time=("wall_time", "median"))
              .reset_index()
              .merge(replicon, on="lam_ft"))
display(search_map.pivot_table(index="method", columns=["lam_ft", "D"],
                               values=["reached_lowest", "median_wall_time"]).round(3))
fig, axes = plt.subplots(1, len(map_lam_fts), figsize=(4 * len(map_lam_fts), 3.2), sharey=True,
                         squeeze=False)
for ax, (lf, part) in zip(axes[0], search_map.groupby("lam_ft"), strict=True):
    for i, (method, c) in enumerate(part.groupby("method", sort=False)):
        ax.plot(c["D"], c["reached_lowest"], "o-", color=f"C{i}", label=method)
    stable = "replica-stable" if part["replica_stable"].iloc[0] else "replicon ≥ 1"
    ax.set_title(f"$\\lambda'={lf:g}$ ({stable})", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("$D$")
axes[0, 0].set_ylabel("fraction of runs reaching\nthe lowest minimum")
axes[0, 0].set_ylim(-0.05, 1.05)
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
run.save(fig, "protocols_minima_map_search")
plt.show()
# the issue's requirement, per (λ', D) where the theory is replica-stable: the default reaches the
# lowest minimum in >= 95 % of the runs (with 8 runs: all of them); reported, not assumed
search_map["meets_95"] = search_map["reached_lowest"] >= 0.95
run.write(search_map, "protocols_minima_map_search_summary")
every_D = search_map[search_map["replica_stable"]].groupby(["method", "lam_ft"])
print("reaches the lowest minimum in >= 95 % of the runs at every D (replica-stable lam_ft):")
display(every_D["meets_95"].all().unstack())
# the default's cost against the former default's, per (lam_ft, D): the median ratio of the times
cost = search_map.pivot_table(index=["lam_ft", "D"], columns="method", values="median_wall_time")
display((cost["default"] / cost["former default"]).rename("default / former default").round(2))
# each search starts with the former default's starts on the same data and only goes down
for method in ("basin hopping", "default"):
    both = searches["former default"].merge(searches[method], on=keys_map,
                                            suffixes=("_before", "_after"))
    assert (both["info_finetune_objective_after"]
            <= both["info_finetune_objective_before"] * (1 + 1e-12)).all(), method
# where the default missed the lowest minimum of a replica-stable point: the minimum it kept and
# the lowest one, their objectives and overlaps o_w (which search found the lowest is in the map)
found = pd.concat([long.assign(method="start " + long["kind"]).rename(columns={"overlap": "o_w"})
                   [[*keys_map, "method", "objective", "o_w"]]]
                  + [df[keys_map].assign(method=m, objective=df["info_finetune_objective"],
                                         o_w=df["overlap"]) for m, df in searches.items()])
stable_lams = replicon.loc[replicon["replica_stable"], "lam_ft"]
rows_missed = (pd.concat(rows).query("method == 'default' and not reached_lowest")
               .merge(pd.DataFrame({"lam_ft": stable_lams}), on="lam_ft"))
for _, r in rows_missed.iterrows():
    at = found[(found["lam_ft"] == r["lam_ft"]) & (found["D"] == r["D"])
               & (found["seed"] == r["seed"])].sort_values("objective")
    print(f"lam_ft = {r['lam_ft']:g}, D = {r['D']}, seed {r['seed']}: the default kept "
          f"{float(at.loc[at['method'] == 'default', 'objective'].iloc[0]):.6f}; lowest:")
    display(at.head(3).round(6))
# the overlap o_w of the minimum each spectral start reaches: the data's Bayes start against the
# Hessian's (start 0 is the Hessian's spectral start; the Bayes start is the one of kind "bayes")
default_runs = searches["default"]
bayes_k = next(k for k in range(10) if default_runs[f"info_ft_start{k}_kind"].eq("bayes").all())
display(default_runs.groupby(["lam_ft", "D"])[[f"info_ft_start{bayes_k}_overlap",
                                               "info_ft_start0_overlap"]]
        .median().rename(columns={f"info_ft_start{bayes_k}_overlap": "o_w from the Bayes start",
                                  "info_ft_start0_overlap": "o_w from the Hessian's"}).round(3))

# %% [markdown]
# ### The default simulator finds the best minimum at the validation points
#
# At the three effective pre-trainings of §1: the default `simulate_finetune` (spectral start,
# 3 random, the Bayes start and basin hopping where they disagree) against the best of
# `map_n_random` random starts
# plus the teacher start (with the same search after them). Same data
# (same seed), so the objectives compare exactly. At the replicon-stable points (78 < 1) the
# default must reach the same minimum; at a point whose replicon is ≥ 1 (at the quick profile the
# third, 1.03) the landscape may hold many near-degenerate minima, and the gap is reported.

# %%
many = sims_over_D("protocols_effective_many_starts", effective_points, n_init=map_n_random,
                   teacher_start=True)
m = sim_eff.merge(many, on=[*keys_eff, "D", "seed"], suffixes=("_default", "_many")).copy()
m["objective_rel_gap"] = ((m["info_finetune_objective_default"]
                           - m["info_finetune_objective_many"])
                          / m["info_finetune_objective_many"].abs())
m["overlap_gap"] = (m["overlap_default"] - m["overlap_many"]).abs()
display(m[["Delta", "Q", "D", "seed", "objective_rel_gap", "overlap_gap"]].round(8))
stable = th_eff.set_index(["Delta", "Q"])["ft_replicon_stable"].astype(bool)
m["replicon_stable"] = [bool(stable.loc[(d, q)]) for d, q in zip(m["Delta"], m["Q"], strict=True)]
worst = m.groupby(["Delta", "Q", "replicon_stable"])[["objective_rel_gap", "overlap_gap"]].max()
display(worst)
# where the replicon (78) is < 1 the default must find the best minimum of all the starts; where it
# is >= 1 near-degenerate minima are expected (replica symmetry need not hold), and only reported
ok = m[m["replicon_stable"]]
assert profile == "smoke" or (ok["objective_rel_gap"] <= 1e-7).all(), ok
