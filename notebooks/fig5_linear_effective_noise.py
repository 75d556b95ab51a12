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
# # Figure 5: the linear activation, where only $\Delta_{\rm eff}$ matters (App. E)
#
# For $\sigma(x)=x/T$ the LoRA training loss is, in terms of the pre-activations (eq. 24),
# $$\mathcal L'=T^{-2}\,\mathbb E\,\|h+\chi\chi^\top-\chi^*\chi^{*\top}-(q-q_0)I_T\|_F^2,\qquad
# h=z-z^*,\quad h_{ab}\sim\mathcal N\big(0,(1+\delta_{ab})\Delta_{\rm eff}\big),$$
# so the frozen pre-training enters the fine-tuning only through the effective noise
# $$\Delta_{\rm eff}=\frac\Delta2+Q_0-2M+Q. \tag{25}$$
# The figure draws the fine-tuning test error $\mathcal E'$ (eq. 5) against $\Delta_{\rm eff}$,
# varied as in Figure 2 by fixing $M=1$ and $Q_0=Q$ (`EffectivePretraining.on_diagonal`), for
# several $\alpha'$. Lines: the fine-tuning state evolution (Result 5, eqs. 67–72, with
# `hdlora.theory.finetune` on an `EffectivePretraining`); squares: simulations of the fine-tuning
# alone with the frozen field drawn from the law $\mathcal Q$ of Result 1
# (`hdlora.simulation.simulate_finetune`, exact for fresh sequences). Each simulation keeps the
# lowest objective of the simulator's default search (its starts, one from the data, and basin
# hopping where they disagree) and of a start at the teacher $w=w^*$ (`teacher_start=True`: a
# validation device; the LoRA objective is not convex, notebook 06 maps where starts fail).
#
# **The reference of the excess error.** The caption subtracts "the value at $\Delta_{\rm eff}=0$",
# the text "the value at $\alpha'\to\infty$". We draw the second: with infinitely many samples the
# LoRA recovers $w^*$, and what remains is the frozen part's error,
# $$\mathcal E'_{\alpha'\to\infty}=\mathbb E\,\|\sigma(z+\chi^*\chi^{*\top}-I)-\sigma(z^*+\chi^*\chi^{*\top}-I)\|_F^2
# =\frac{T^2+T}{T^2}\,\Delta_{\rm eff},$$
# the $\Delta_{\rm eff}$ term of eq. (80) with the coefficient corrected from $T^2+T-2$ to $T^2+T$
# (erratum of notebook 03). The excess $\mathcal E'-\frac{T+1}{T}\Delta_{\rm eff}$ is then the
# price of the finite number $N'=\alpha'D$ of fine-tuning samples, which is what the figure is
# about; the value at $\Delta_{\rm eff}=0$ would mix that price with the frozen error itself.
#
# Caption parameters: $T=3$, $\sigma(x)=x/T$; simulations at $D=5\times10^3$ over five runs in the
# paper profile. The caption gives neither $\lambda'$, $\Delta$ nor the $\alpha'$: we take
# $\lambda'=0.5$ (as Figure 2), $\Delta=0$, and $\alpha'\in\{1,3,10\}$; a second $\Delta$
# (`Delta_check`) checks that only $\Delta_{\rm eff}$ matters.
#
# Parameters (papermill): `T`, `activation`, `Delta`, `Delta_check`, `lam_ft`, `M`, the curves
# `alpha_fts`, the $\Delta_{\rm eff}$ axis `delta_eff_range` with `n_delta` points, the large
# `alpha_ft_limit` that checks the $\alpha'\to\infty$ limit; sizes `n_mc`, `Ds`, `sim_seeds`,
# `sim_delta_effs` (None: the profile's); `profile`, `out_dir`, `seed`, `progress`, `recompute`.

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
T = 3
activation = "linear"
Delta = 0.0
Delta_check = 2.0
lam_ft = 0.5
M = 1.0
alpha_fts = [1.0, 3.0, 10.0]
alpha_ft_limit = 1000.0
delta_eff_range = [0.0, 4.0]
n_delta = None
n_mc = None
Ds = None  # simulated dimensions (the agreement extrapolates in 1/D; marks: the largest)
sim_seeds = None
sim_delta_effs = None

# %%

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.lines import Line2D

from hdlora import EffectivePretraining, Params
from hdlora.harness.plots import (
    Legend,
    draw_curve,
    draw_simulation,
    seed_means,
    simulation_text,
    stable_at,
)
from hdlora.harness.run import Run
from hdlora.simulation import simulate_finetune
from hdlora.theory import sweep

run = Run("fig5_linear_effective_noise", out_dir, profile, recompute, executor)
n_delta = run.size("n_delta", n_delta)
n_mc = run.size("n_mc", n_mc)
Ds = run.choose(Ds, smoke=[40], quick=[200, 400], paper=[2500, 5000])
D = max(Ds)
sim_seeds = run.size("sim_seeds", sim_seeds)
sim_delta_effs = run.choose(sim_delta_effs, smoke=[1.0], quick=[0.5, 2.0, 3.5],
                            paper=[0.0, 1.0, 2.0, 3.0, 4.0])
base = Params(T=T, Delta=Delta, lam_ft=lam_ft, activation=activation)
base_check = base.replace(Delta=Delta_check)
grid = [float(x) for x in np.linspace(delta_eff_range[0], delta_eff_range[1], n_delta)]
effs = [EffectivePretraining.on_diagonal(x, Delta, M) for x in grid]
# the check curve: its own n_delta points on its axis, and the main grid's points there (where
# the two panels are compared at equal Delta_eff)
check_grid = sorted({x for x in grid if x >= Delta_check / 2}
                    | {float(x) for x in np.linspace(max(Delta_check / 2, delta_eff_range[0]),
                                                     delta_eff_range[1], n_delta)})
check_effs = [EffectivePretraining.on_diagonal(x, Delta_check, M) for x in check_grid]
sim_effs = [EffectivePretraining.on_diagonal(float(x), Delta, M) for x in sim_delta_effs]
# the same Delta_eff at Delta_check, where it is reachable (Delta_eff >= Delta_check/2)
sim_effs_check = [EffectivePretraining.on_diagonal(float(x), Delta_check, M)
                  for x in sim_delta_effs if float(x) >= Delta_check / 2]
alpha_ft_values = [float(a) for a in alpha_fts]

# %% [markdown]
# ## Theory and simulations
#
# `sweep` over the grid of effective pre-trainings and $\alpha'$ (common random numbers: every
# point uses the samples of one seed, so the curves are smooth), once at $\Delta$ and once at
# `Delta_check` (same $\Delta_{\rm eff}$, other $Q_0=Q$), and once at $\alpha'=$`alpha_ft_limit`.

# %%
def theory_table(name, params, pretrainings, alphas):
    return run.calls(name, sweep, [dict(params=params, pretraining=pretrainings)],
                     alpha_ft=alphas, n_mc=n_mc, seed=seed, progress=progress)


theory = theory_table("fig5_theory", base, effs, alpha_ft_values).assign(panel="main")
theory_check = theory_table("fig5_theory_check", base_check, check_effs, alpha_ft_values).assign(
    panel="Delta_check")
theory_limit = theory_table("fig5_theory_limit", base, effs, [float(alpha_ft_limit)]).assign(
    panel="limit")
th_all = pd.concat([theory, theory_check, theory_limit], ignore_index=True).assign(source="theory")
failed = th_all[~th_all["converged"]]
if len(failed):  # drawn as crosses and listed here
    display(failed[["panel", "alpha_ft", "Delta_eff", "n_iter", "ft_replicon", "message"]])
# required where the replica-symmetric fixed point is stable; where the replicon (78) is >= 1 it
# need not be attractive, and a point that does not converge there is reported, not required
assert profile == "smoke" or (failed["ft_replicon_stable"] == False).all(), (  # noqa: E712
    "non-converged replicon-stable theory points")
sim = pd.concat([
    run.solve(name, simulate_finetune, [p.replace(alpha_ft=a) for a in alpha_ft_values],
              seeds=sim_seeds, grid={"effective": e, "D": Ds}, progress=progress,
              teacher_start=True).assign(panel=panel)
    for name, p, e, panel in (("fig5_simulation", base, sim_effs, "main"),
                              ("fig5_simulation_check", base_check, sim_effs_check, "Delta_check"))
    if e], ignore_index=True).assign(source="simulation")
fig5 = pd.concat([th_all, sim], ignore_index=True)
run.write(fig5, "fig5")
print(f"{len(th_all)} theory points, {len(sim)} simulations at D = {Ds}")

# %% [markdown]
# ## The figure
#
# Left: $\mathcal E'$ against $\Delta_{\rm eff}$ (lines: theory at $\Delta$; thin dashed: the same
# at `Delta_check`; dotted black: the $\alpha'\to\infty$ limit $\frac{T+1}{T}\Delta_{\rm eff}$).
# Right: the excess $\mathcal E'-\frac{T+1}{T}\Delta_{\rm eff}$. Squares: simulations at $\Delta$,
# triangles at `Delta_check`, at the largest $D$ (mean ± standard deviation across runs, App. D).

# %%
data = pd.read_csv(run.data_dir / "fig5.csv")  # the figure is drawn from the data file only
limit_coef = (T + 1) / T
th = data[data["source"] == "theory"]
sm = data[(data["source"] == "simulation") & (data["D"] == D)]  # the largest D
sim_text = simulation_text(sm, ["panel", "alpha_ft", "Delta_eff"])
legend = Legend()
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
for i, a in enumerate(alpha_ft_values):
    for panel, style in (("main", "-"), ("Delta_check", "--")):
        c = th[(th["panel"] == panel) & (th["alpha_ft"] == a)].sort_values("Delta_eff")
        label = f"$\\alpha'={a:g}$" if panel == "main" else None
        for ax, shift in ((axes[0], 0.0), (axes[1], 1.0)):
            y = c["ft_test_error"] - shift * limit_coef * c["Delta_eff"]
            draw_curve(ax, c["Delta_eff"], y, c["ft_replicon_stable"], c["converged"],
                       color=f"C{i}", label=label, ls=style, legend=legend)
    for panel, marker, at in (("main", "s", Delta), ("Delta_check", "^", Delta_check)):
        s = seed_means(sm[(sm["alpha_ft"] == a) & (sm["panel"] == panel)], ["Delta_eff"],
                       "ft_test_error")
        c = th[(th["panel"] == panel) & (th["alpha_ft"] == a)]
        stable = stable_at(s["Delta_eff"], c["Delta_eff"], c["ft_replicon_stable"])
        for ax, shift in ((axes[0], 0.0), (axes[1], 1.0)):
            draw_simulation(ax, s["Delta_eff"], s["mean"] - shift * limit_coef * s["Delta_eff"],
                            s["sd"], color=f"C{i}", marker=marker, legend=legend,
                            kind=sim_text.replace("simulation", f"simulation at $\\Delta={at:g}$"),
                            stable=stable)
x = np.array(grid)
legend.add(axes[0].plot(x, limit_coef * x, "k:",
                        label="$\\alpha'\\to\\infty$: $\\frac{T+1}{T}\\Delta_{\\rm eff}$")[0])
legend.add(Line2D([], [], color="0.35", ls="--", lw=1.4,
                  label=f"theory at $\\Delta={Delta_check:g}$ (solid: $\\Delta={Delta:g}$)"))
axes[0].set_ylabel("$\\mathcal{E}'$")
axes[1].set_ylabel("$\\mathcal{E}'-\\frac{T+1}{T}\\Delta_{\\rm eff}$ (excess)")
for ax in axes:
    ax.set_xlabel("$\\Delta_{\\rm eff}=\\Delta/2+Q_0-2M+Q$")
legend.draw(fig)
fig.suptitle(f"$\\sigma(x)=x/T$, $T={T}$, $\\lambda'={lam_ft:g}$, $M={M:g}$, $Q_0=Q$", fontsize=9)
run.save(fig, "fig5")
plt.show()

# %% [markdown]
# ## The paper's readings, checked
#
# 1. $\mathcal E'$ grows with $\Delta_{\rm eff}$ and falls with $\alpha'$ (on the theory grid);
# 2. for linear $\sigma$, $\mathcal E'$ depends on the pre-training only through $\Delta_{\rm eff}$:
#    the curves at $\Delta$ and `Delta_check` agree within their standard errors;
# 3. the $\alpha'\to\infty$ limit: at $\alpha'=$`alpha_ft_limit` the slope of $\mathcal E'$ in
#    $\Delta_{\rm eff}$ is the corrected $(T^2+T)/T^2$, not the printed $(T^2+T-2)/T^2$ of eq. (80);
# 4. theory and simulation agree (the notebooks' agreement criterion of `hdlora.harness.agreement`).

# %%
th = th[th["converged"]]  # a cross is not a result: the readings use the converged points
main = th[th["panel"] == "main"]
pivot = main.pivot_table(index="Delta_eff", columns="alpha_ft", values="ft_test_error")
grows = bool((pivot.diff().dropna() > 0).all().all())
falls = bool((pivot.T.diff().dropna() < 0).all().all())
both = th[th["panel"].isin(["main", "Delta_check"])].pivot_table(
    index=["alpha_ft", "Delta_eff"], columns="panel", values=["ft_test_error", "ft_test_error_se"])
both = both.dropna()
z_panels = ((both[("ft_test_error", "main")] - both[("ft_test_error", "Delta_check")])
            / np.hypot(both[("ft_test_error_se", "main")], both[("ft_test_error_se", "Delta_check")]))
lim = th[th["panel"] == "limit"].sort_values("Delta_eff")
slope = float(np.polyfit(lim["Delta_eff"], lim["ft_test_error"], 1)[0])
readings = pd.DataFrame([
    {"reading": "E' grows with Delta_eff at every alpha'", "holds": grows, "value": ""},
    {"reading": "E' falls with alpha' at every Delta_eff", "holds": falls, "value": ""},
    {"reading": "Delta and Delta_check coincide at equal Delta_eff (max |z|)",
     "holds": bool(np.abs(z_panels).max() < 4), "value": f"{np.abs(z_panels).max():.2f}"},
    {"reading": f"slope at alpha'={alpha_ft_limit:g} is (T^2+T)/T^2 = {limit_coef:.4f}",
     "holds": abs(slope - limit_coef) < abs(slope - (T * T + T - 2) / T**2),
     "value": f"{slope:.4f} (printed eq. 80: {(T * T + T - 2) / T**2:.4f})"},
])
display(readings)
# at every profile, smoke (CI) included: the readings hold, among them the slope (T² + T)/T² of
# eq. (80) corrected against the printed (T² + T − 2)/T²; at smoke, not the panels' coincidence
# (its |z| needs converged theory points and more samples than smoke has)
coincide = readings["reading"].str.startswith("Delta and Delta_check coincide")
assert readings.loc[~coincide | (profile != "smoke"), "holds"].all(), readings

# %% [markdown]
# ## Theory against simulation
#
# At each simulated point, at $\Delta$ and at `Delta_check`: the simulations' mean over runs at
# every $D$ of `Ds`, extrapolated in $1/D$, against the theory at the same
# $(\alpha',\Delta_{\rm eff})$ (the theory evaluated again exactly there), with the two-part
# criterion of `hdlora.harness.agreement.check_agreement` (a $z$-score per point, and per
# observable the mean relative deviation against its standard error across seeds).
#
# **The smallest $\alpha'$.** At $\alpha'=1$ ($N'=D$ sequences for $D$ LoRA weights) the
# simulations once sat above the theory by many standard errors (with an i.i.d. teacher, three
# runs, one $D$). The table after the check shows, per $\alpha'$, what the runs say now: the
# mean relative deviation of $\mathcal E'$ (extrapolated) from the theory with its standard
# error across seeds, the relative spread of $\mathcal E'$ across runs at the largest $D$, and
# the fraction of runs whose L-BFGS starts ended in different minima. At $\alpha'=1$ a run's
# $\mathcal E'$ spreads several times more than at $\alpha'\ge3$ and most runs' starts
# disagree (the rank-one objective has many minima there), so a few runs at one $D$ give a
# standard error that understates the error of their mean.

# %%
from hdlora.harness.readings import (  # noqa: E402
    agreement_readings,
    reading,
    readings_table,
    simulation_sizes,
    verdict_of,
)

sim_theory = pd.concat([theory_table("fig5_theory_at_sims", base, sim_effs, alpha_ft_values)]
                       + ([theory_table("fig5_theory_at_sims_check", base_check, sim_effs_check,
                                        alpha_ft_values)] if sim_effs_check else []),
                       ignore_index=True)
# at every profile, smoke (CI) included: the theory converges at the simulated points
assert sim_theory["converged"].all(), sim_theory.loc[~sim_theory["converged"], ["alpha_ft", "Q"]]
keys = ["alpha_ft", "Delta", "Q"]  # Q0 = Q, M fixed: Q labels the effective pre-training
# required at the replicon-stable points, reported at the others
table, check, check_unstable = run.compare(
    "fig5_agreement", sim, sim_theory,
    keys, ["ft_test_error", "overlap", "q", "m"])
ft = table[table["observable"] == "ft_test_error"]
seed_cols = [c for c in ft if c.startswith("seed_rel_dev_")]
largest = sim[sim["D"] == D]
by_alpha = pd.DataFrame([{
    "alpha_ft": a, "points": len(g), "mean_rel_dev": g["rel_dev"].mean(),
    "se": g[seed_cols].mean().std(ddof=1) / np.sqrt(len(seed_cols)),
    "run_spread": largest[largest["alpha_ft"] == a].groupby(keys)["ft_test_error"].agg(
        lambda e: e.std(ddof=1) / e.mean()).mean(),
    "starts_disagree": sim.loc[sim["alpha_ft"] == a, "info_ft_starts_disagree"].astype(bool).mean(),
} for a, g in ft.groupby("alpha_ft")])
by_alpha.round(4)

# %% [markdown]
# The readings as data (`hdlora.harness.readings`): `data/fig5_readings.csv`, from which the
# README's note on this figure is rendered.

# %%
printed = (T * T + T - 2) / T**2
rise, fall = pivot.diff().min().min(), pivot.T.diff().max().max()
rows = [
    reading(figure="fig5", claim="E' grows with the effective noise", location="§4, Fig. 5",
            quantity="smallest rise of E' between neighbouring Delta_eff", measured=rise,
            verdict=verdict_of(rise > 0), reason="theory grid, every α'"),
    reading(figure="fig5", claim="E' falls with α'", location="§4, Fig. 5",
            quantity="largest change of E' between neighbouring α'", measured=fall,
            verdict=verdict_of(fall < 0), reason="theory grid, every Delta_eff"),
    reading(figure="fig5", claim="for linear σ only Delta_eff matters", location="App. C",
            quantity="largest |z| between the panels Δ and Δ_check at equal Delta_eff",
            measured=np.abs(z_panels).max(), verdict=verdict_of(np.abs(z_panels).max() < 4),
            reason=f"|z| < 4 required; over {len(z_panels)} converged pairs"),
    reading(figure="fig5", claim="E' → (T² + T − 2) Delta_eff/T² as α' → ∞",
            location="eq. (80)", quantity=f"slope of E' in Delta_eff at α' = {alpha_ft_limit:g}",
            measured=slope, paper=printed,
            verdict=verdict_of(abs(slope - printed) < abs(slope - limit_coef)),
            reason=f"an erratum: the corrected (T² + T)/T² is {limit_coef:.4f}"),
]
rows.append(reading(figure="fig5", claim="the state evolution converges", location="App. A",
                    quantity="theory points not converged (replicon ≥ 1 at each)",
                    measured=len(failed), verdict="reported", reason="drawn as crosses"))
rows += agreement_readings("fig5", check, check_unstable)
for _, r in by_alpha.iterrows():
    rows.append(reading(
        figure="fig5", claim="the simulations at α' = 1 sit above the theory (issue 20)",
        location="§4, Fig. 5", quantity=f"α' = {r['alpha_ft']:g}: mean (simulation − theory)/theory"
        " of E'", measured=r["mean_rel_dev"], se=r["se"], verdict="reported",
        reason=f"{int(r['points'])} points; runs spread {r['run_spread']:.1%} (sd/mean at D = {D}); "
               f"{r['starts_disagree']:.0%} of runs with disagreeing starts"))
rows += simulation_sizes("fig5", sim, keys)
run.write(readings_table(rows), "fig5_readings")
readings_table(rows)
