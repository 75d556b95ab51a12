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
# # Figure 4: active fine-tuning, Algorithm 1 (§4.3)
#
# A pool of $\bar N'=\bar\alpha'D$ fresh candidate sequences is available, of which only
# $N'=\rho\bar N'$ can be labelled ($\rho$ the labelling ratio, so $\alpha'=\rho\bar\alpha'$).
# Algorithm 1 computes the frozen pre-activation $z_\mu$ of every candidate and labels the $N'$
# with the smallest $\|\sigma(z_\mu)-\sigma(0)\|_F^2$. On the selected set $z\approx0$, so the
# nuisance variability of the frozen extensive-rank part is reduced: for a linear $\sigma$ the
# effective noise falls from $\Delta_{\rm eff}$ (eq. 25) towards
# $$\Delta_{\rm eff,ActFT}=\frac\Delta2+Q_0-\frac{M^2}{Q}, \tag{28}$$
# and $\Delta_{\rm eff}-\Delta_{\rm eff,ActFT}=(M/\sqrt Q-\sqrt Q)^2\ge0$ (App. C).
#
# The theory conditions the law $\mathcal Q$ of the training channel as App. D says: per
# Monte-Carlo block, draw $n/\rho$ samples of $(z^*,z)$ and keep the $n$ with the smallest score;
# the test errors use the unconditioned law (`hdlora.theory.finetune(..., rho=ρ)`). The
# simulation draws the $\bar N'$ candidates' frozen fields from $\mathcal Q$, ranks them, and
# fine-tunes on the $N'$ best (`hdlora.simulation.simulate_finetune(..., rho=ρ)`).
#
# The figure: left, $\mathcal E'(\hat W,\hat w)$ (uniform selection, dashed) and
# $\mathcal E'(\hat W,\hat w_{\rm ActFT})$ (Algorithm 1, solid) against $\Delta_{\rm eff}$
# ($M=1$, $Q_0=Q$), with their difference $\Delta\mathcal E'$ in an inset; right, both overlaps
# $o_w$; one colour per labelling ratio $\rho$. Each point takes the best $\lambda'$ of
# $\{0.1,0.2,0.5,1\}$ for the theory's $\mathcal E'$, separately for each selection; the
# simulations run at the $\lambda'$ the theory chose.
#
# Caption parameters: $\bar\alpha'=100$, $T=3$, $\Delta=0$, softmax; simulations at $D=10^4$ over
# five runs in the paper profile. The caption does not list the $\rho$: we draw $\rho=0.03$ and
# $0.1$ ($\alpha'=3$ and $10$).
#
# **How the simulations' minima are found.** The paper reports that for the uniform selection at
# large $\Delta_{\rm eff}$ and small $\lambda'$ random L-BFGS starts mostly fail and were replaced
# by a start at $w=w^*$. Here every simulation runs the simulator's default search (the spectral
# start, random ones, a start from the data, and basin hopping where the starts end in different
# minima) *and* the teacher start (`teacher_start=True`, a validation device: it uses $w^*$) and
# keeps the lowest objective; the table below counts how often the starts disagreed.
#
# Parameters (papermill): `T`, `activation`, `Delta`, `M`, `alpha_ft_bar` ($\bar\alpha'$), the
# curves `rhos`, the candidates `lam_fts` for $\lambda'$, the axis `delta_eff_max` with `n_delta`
# points; sizes `n_mc`, `Ds`, `sim_seeds`, `sim_delta_effs`; the paired runs of the gain
# `paired_delta_effs`, `paired_Ds`, `paired_runs`, `n_mc_paired` (None: the profile's);
# `profile`, `out_dir`, `seed`, `progress`, `recompute`, `executor`.

# %% tags=["parameters"]
profile = "quick"
out_dir = None
seed = 0
progress = None
recompute = False
executor = None  # where the jobs run: "processes:2", "dask-local:4", "dask://host:8786"
T = 3
activation = "softmax"
Delta = 0.0
M = 1.0
alpha_ft_bar = 100.0
rhos = [0.03, 0.1]  # the curves (labelling ratios N'/N̄')
lam_fts = [0.1, 0.2, 0.5, 1.0]  # E' is minimised over these for each point
delta_eff_max = 4.0
n_delta = None
n_mc = None
Ds = None  # simulated dimensions (the agreement extrapolates in 1/D; marks: the largest)
sim_seeds = None
sim_delta_effs = None
paired_delta_effs = None  # {rho: [Delta_eff or "min" (the theory's most negative gain)]}
paired_Ds = None  # dimensions of the paired runs of the gain
paired_runs = None  # {rho: paired runs per point and D} (seeds 0, 1, ...)
n_mc_paired = None  # Monte-Carlo samples of the theory at the paired points

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.lines import Line2D

from hdlora import EffectivePretraining, Params
from hdlora.harness.agreement import agreement_threshold
from hdlora.harness.io import SIMULATION_RTOL
from hdlora.harness.paired import gain_table, gain_verdict
from hdlora.harness.plots import (
    Legend,
    draw_curve,
    draw_simulation,
    seed_means,
    simulation_text,
    stable_at,
)
from hdlora.harness.readings import (
    agreement_readings,
    format_value,
    reading,
    readings_table,
    simulation_sizes,
    verdict_of,
)
from hdlora.harness.run import Run
from hdlora.simulation import simulate_finetune
from hdlora.simulation.paired import simulate_paired
from hdlora.theory import noise, sweep

run = Run("fig4_active_finetuning", out_dir, profile, recompute, executor)
n_delta = run.choose(n_delta, smoke=2, quick=20, paper=30)
n_mc = run.size("n_mc", n_mc)
Ds = run.choose(Ds, smoke=[30], quick=[75, 150], paper=[5000, 10_000])
D = max(Ds)
sim_seeds = run.size("sim_seeds", sim_seeds)
sim_delta_effs = run.choose(sim_delta_effs, smoke=[2.0], quick=[1.0, 3.0],
                            paper=[0.5, 1.0, 2.0, 3.0, 4.0])
paired_around = {max(rhos): [1.0, "min", 3.0]} | ({min(rhos): [2.0]} if len(rhos) > 1 else {})
paired_delta_effs = run.choose(paired_delta_effs, smoke={max(rhos): ["min"]},
                               quick=paired_around, paper=paired_around)
paired_Ds = run.choose(paired_Ds, smoke=[30], quick=[100, 300], paper=[2500, 10_000])
# runs for a standard error of ~0.002 on the extrapolated gain: at the smallest ρ the two
# selections share few candidates, and the paired gain spreads as much as either error
paired_runs = run.choose(
    paired_runs, smoke={max(rhos): 2},
    quick={max(rhos): 36} | ({min(rhos): 144} if len(rhos) > 1 else {}),
    paper={max(rhos): 40} | ({min(rhos): 160} if len(rhos) > 1 else {}))
paired_runs = {float(r): int(n) for r, n in paired_runs.items()}
n_mc_paired = run.choose(n_mc_paired, smoke=1024, quick=32768, paper=65536)
base = Params(T=T, Delta=Delta, activation=activation)
lam_ft_values = [float(x) for x in lam_fts]
grid = [float(x) for x in np.linspace(Delta / 2, delta_eff_max, n_delta)]
effs = [EffectivePretraining.on_diagonal(x, Delta, M) for x in grid]
curves = {(rho, sel): base.replace(alpha_ft=rho * alpha_ft_bar)
          for rho in rhos for sel in ("uniform", "active")}

# %% [markdown]
# ## Theory: both selections, every $\lambda'$, then the best $\lambda'$
#
# One `sweep` per (ρ, selection) over the effective pre-trainings × $\lambda'$; the rows with the
# lowest $\mathcal E'$ over $\lambda'$ make the curves.

# %%
def theory_curve(rho, selection):
    p = curves[(rho, selection)]
    rho_arg = rho if selection == "active" else None
    df = run.calls(f"fig4_theory_{selection}_rho{rhos.index(rho)}", sweep,
                   [dict(params=p, pretraining=effs, rho=rho_arg)], lam_ft=lam_ft_values,
                   n_mc=n_mc, seed=seed, progress=progress)
    return df.assign(rho=rho, selection=selection)  # uniform rows: the ρ that sets α' = ρ ᾱ'


theory_all = pd.concat([theory_curve(r, s) for (r, s) in curves], ignore_index=True)
theory_all = theory_all.assign(source="theory", alpha_ft_bar=alpha_ft_bar)
failed = theory_all[~theory_all["converged"]]
if len(failed):  # drawn as crosses and listed here
    display(failed[["rho", "selection", "lam_ft", "Delta_eff", "n_iter", "ft_replicon", "message"]])
# required where the replica-symmetric fixed point is stable; where the replicon (78) is >= 1 it
# need not be attractive, and a point that does not converge there is reported, not required
assert profile == "smoke" or (failed["ft_replicon_stable"] == False).all(), (  # noqa: E712
    "non-converged replicon-stable theory points")
# at every profile, smoke (CI) included: the state evolutions of Algorithm 1 (the selection's
# conditioning of the law of eq. 13) converge
active = theory_all[theory_all["selection"] == "active"]
assert active["converged"].all(), active.loc[~active["converged"], ["rho", "Q", "lam_ft"]]
best = theory_all.loc[theory_all.groupby(["rho", "selection", "Q"])["ft_test_error"].idxmin()]
best = best.assign(panel="best_lam_ft")
chosen = best[["rho", "selection", "Delta_eff", "lam_ft"]].pivot_table(
    index="Delta_eff", columns=["rho", "selection"], values="lam_ft")
print("best lambda' of each point:")
display(chosen)

# %% [markdown]
# ## Simulations at the chosen $\lambda'$
#
# For each (ρ, selection) and simulated $\Delta_{\rm eff}$, the simulator runs at the $\lambda'$
# the theory chose there (the theory evaluated exactly at the simulated points, below).

# %%
sim_effs = [EffectivePretraining.on_diagonal(float(x), Delta, M) for x in sim_delta_effs]
at_sims = pd.concat([
    run.calls(f"fig4_theory_at_sims_{sel}_rho{rhos.index(rho)}", sweep,
              [dict(params=curves[(rho, sel)], pretraining=sim_effs,
                    rho=rho if sel == "active" else None)],
              lam_ft=lam_ft_values, n_mc=n_mc, seed=seed,
              progress=progress).assign(rho=rho, selection=sel)
    for (rho, sel) in curves], ignore_index=True)
at_sims = at_sims.loc[at_sims.groupby(["rho", "selection", "Q"])["ft_test_error"].idxmin()]
jobs = []  # at each (ρ, selection) and effective pre-training, the point at the chosen λ'
for (rho, sel), p in curves.items():
    for eff in sim_effs:
        row = at_sims[(at_sims["rho"] == rho) & (at_sims["selection"] == sel)
                      & np.isclose(at_sims["Q"], eff.Q)].iloc[0]
        jobs.append(dict(point=p.replace(lam_ft=float(row["lam_ft"])),
                         grid={"effective": [eff], "D": Ds},
                         rho=rho if sel == "active" else None, assign=dict(rho=rho, selection=sel)))
sim = run.solve_jobs("fig4_simulation", simulate_finetune, jobs, seeds=sim_seeds,
                     teacher_start=True, progress=progress)
sim = sim.assign(source="simulation", panel="best_lam_ft", alpha_ft_bar=alpha_ft_bar)
disagree = [c for c in sim.columns if c.endswith("starts_disagree")]
print(f"{len(sim)} simulations at D = {Ds}; runs whose starts reached different minima: "
      + ", ".join(f"{c}: {int(sim[c].fillna(False).astype(bool).sum())}" for c in disagree))
fig4 = pd.concat([theory_all.assign(panel="all_lam_ft"), best, sim], ignore_index=True)
run.write(fig4, "fig4")

# %% [markdown]
# ## The gain, paired: does Algorithm 1 improve $\mathcal E'$ at every noise level?
#
# The paper reads Fig. 4 as "for all noise levels we investigated, active learning improves
# the test error". At $\rho=0.1$ the theory's gain $\Delta\mathcal E'=\mathcal E'({\rm
# uniform})-\mathcal E'({\rm Alg.\,1})$ is negative over most of the range of $\Delta_{\rm
# eff}$, by a few thousandths (the readings below). The simulations above cannot resolve that:
# each selection's $\mathcal E'$ fluctuates by $\sim10^{-2}$ from run to run. A *paired* run
# (`hdlora.simulation.paired.simulate_paired`) draws one teacher, one pool of $\bar N'$
# candidates, one set of training sequences and one test set, and fine-tunes both selections of
# that pool (uniform: a random $N'$ of it; Alg. 1: its $N'$ best) at every $\lambda'$ of the
# grid. Their difference cancels what they share (the spreads are printed below).
#
# The gain is taken at each fixed $\lambda'$, and at the best $\lambda'$ of each protocol: for
# the simulation the $\lambda'$ of the lowest $\mathcal E'$ averaged over the runs at that point
# and $D$ (a minimum taken run by run would be biased low), for the theory that of its lowest
# $\mathcal E'$. Each seed's gains are extrapolated in $1/D$, and the spread of those intercepts
# over the seeds is the standard error (`hdlora.harness.paired`). The theory at these points
# uses `n_mc_paired` Monte-Carlo samples, more than the curves: at $\rho=0.03$ the state
# evolution of Algorithm 1 keeps 3 % of its samples, and at the curves' `n_mc` its value moves
# with the Monte-Carlo seed by more than its stated standard error.
#
# The points: at the largest $\rho$, $\Delta_{\rm eff}=1$, the theory's most negative gain
# (`"min"`) and 3; at the smallest $\rho$, $\Delta_{\rm eff}=2$. The verdict on the paper's
# reading is in the readings at the end; theory and paired simulation must agree at the points
# where both protocols' replicon is below 1.

# %%
def resolve(rho, value):
    """A paired point's Delta_eff: a number, or "min", the grid point of the theory's most
    negative gain at the best lambda' (the best-lambda' curves above)."""
    if value != "min":
        return float(value)
    b = best[best["rho"] == rho].pivot_table(index="Q", columns="selection",
                                             values=["ft_test_error", "Delta_eff"])
    gain = b[("ft_test_error", "uniform")] - b[("ft_test_error", "active")]
    return float(b.loc[gain.idxmin(), ("Delta_eff", "active")])


paired_points = {float(rho): [resolve(float(rho), v) for v in values]
                 for rho, values in paired_delta_effs.items()}
assert set(paired_points) <= set(rhos), f"paired_delta_effs: every rho must be one of {rhos}"
paired_effs = {rho: [EffectivePretraining.on_diagonal(x, Delta, M) for x in xs]
               for rho, xs in paired_points.items()}
theory_paired = pd.concat([
    run.calls(f"fig4_theory_paired_{sel}_rho{rhos.index(rho)}", sweep,
              [dict(params=base.replace(alpha_ft=rho * alpha_ft_bar), pretraining=effs_p,
                    rho=rho if sel == "active" else None)],
              lam_ft=lam_ft_values, n_mc=n_mc_paired, seed=seed,
              progress=progress).assign(rho=rho, selection=sel)
    for rho, effs_p in paired_effs.items() for sel in ("uniform", "active")],
    ignore_index=True)
paired = run.solve_jobs(
    "fig4_paired", simulate_paired,
    [dict(point=base.replace(alpha_ft=rho * alpha_ft_bar), grid={"effective": [eff], "D": paired_Ds},
          rho=rho, seeds=list(range(paired_runs[rho])))
     for rho, effs_p in paired_effs.items() for eff in effs_p],
    lam_fts=lam_ft_values, teacher_start=True, progress=progress)
paired_gain = gain_table(paired, theory_paired)
run.write(paired_gain, "fig4_gain", rtol=SIMULATION_RTOL)
shown = ["rho", "Delta_eff", "lam_ft", "replicon_stable", "single_minimum_fraction", "theory",
         "theory_se",
         *[c for c in paired_gain.columns if c.startswith(("sim_D", "se_D", "runs_D", "lam_"))],
         "sim", "sim_se", "z"]
display(paired_gain[shown].round(5))
# what the pairing buys: the spread across runs of the gain against that of each E'
runs = paired.pivot_table(index=["rho", "Delta_eff", "D", "lam_ft", "seed"], columns="selection",
                          values="ft_test_error")
spread = pd.DataFrame({"sd_gain": (runs["uniform"] - runs["active"]), "sd_uniform": runs["uniform"],
                       "sd_active": runs["active"]}).groupby(level=[0, 1, 2]).std()
display(spread.round(4))

# %% [markdown]
# Agreement of the paired gain with the theory is required at the rows where the simulation
# measures what the theory describes: both protocols' replicon (78) below 1, and both
# protocols' starts reaching one minimum in at least 95 % of the runs at every $D$ (column
# `single_minimum_fraction`; the standard issue 27 sets for the simulator). There every $|z|$
# must stay below the Bonferroni threshold of a Student $t$ with (seeds − 1) degrees of freedom
# (`agreement_threshold`, the figures' criterion). The other rows are shown, not required: at
# $\rho=0.03$ the uniform selection's landscape has several minima in a fraction of the runs
# that grows with $D$, and its simulated $\mathcal E'$ lies above the replica-symmetric
# prediction even where the replicon is below 1; Algorithm 1's set, drawn from the same pool,
# has one minimum and agrees.

# %%
required = paired_gain[paired_gain["required"]]
gain_threshold = agreement_threshold(len(required), required["seeds"].min() - 1)
print(f"paired gain: {len(required)} required comparisons, largest |z| "
      f"{required['z'].abs().max():.2f}, threshold {gain_threshold:.2f}")
assert profile == "smoke" or (required["z"].abs() <= gain_threshold).all(), (
    required.loc[required["z"].abs() > gain_threshold, shown])
apart = paired_gain[~paired_gain["required"]]
print("shown apart (replicon >= 1, or several minima in more than 5 % of the runs):")
display(apart[["rho", "Delta_eff", "lam_ft", "replicon_stable", "single_minimum_fraction",
               "theory", "theory_se", "sim", "sim_se", "z"]].round(4))
# the cause, measured: per protocol, E' against the theory and the runs with several minima
multi = paired.assign(several_minima=paired["info_ft_n_minima"] > 1)
display(multi.groupby(["rho", "Delta_eff", "selection", "lam_ft", "D"])[
    ["ft_test_error", "several_minima"]].mean().unstack("D").round(4))

# %% [markdown]
# ## The figure
#
# Marks: the simulations at the largest $D$ of `Ds`, mean ± standard deviation across runs (App.
# D); the inset's diamonds: the gain of the paired runs at the best $\lambda'$ of each protocol,
# extrapolated to $D\to\infty$, ± its standard error (above). The agreement below extrapolates
# over every $D$.

# %%
data = pd.read_csv(run.data_dir / "fig4.csv")  # the figure is drawn from the data files only
gain_data = pd.read_csv(run.data_dir / "fig4_gain.csv", dtype={"lam_ft": str})
th = data[(data["source"] == "theory") & (data["panel"] == "best_lam_ft")]
sm = data[(data["source"] == "simulation") & (data["D"] == D)]  # the largest D
sim_text = simulation_text(sm, ["rho", "selection", "Delta_eff"])
legend = Legend()
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
inset = axes[0].inset_axes([0.58, 0.1, 0.38, 0.32])
markers = {"uniform": "s", "active": "o"}
for i, rho in enumerate(rhos):
    for sel, ls in (("uniform", "--"), ("active", "-")):
        c = th[(th["rho"] == rho) & (th["selection"] == sel)].sort_values("Delta_eff")
        name = "Alg. 1" if sel == "active" else "uniform"
        for ax, col in ((axes[0], "ft_test_error"), (axes[1], "overlap")):
            draw_curve(ax, c["Delta_eff"], c[col], c["ft_replicon_stable"], c["converged"],
                       color=f"C{i}", ls=ls, legend=legend)
            s = seed_means(sm[(sm["rho"] == rho) & (sm["selection"] == sel)], ["Delta_eff"], col)
            draw_simulation(ax, s["Delta_eff"], s["mean"], s["sd"], color=f"C{i}",
                            marker=markers[sel], legend=legend,
                            kind=f"{sim_text.replace('simulation', 'simulation, ' + name)}",
                            stable=stable_at(s["Delta_eff"], c["Delta_eff"],
                                             c["ft_replicon_stable"]))
    u = th[(th["rho"] == rho) & (th["selection"] == "uniform")].set_index("Q")["ft_test_error"]
    a = th[(th["rho"] == rho) & (th["selection"] == "active")].set_index("Q")
    gain = (u - a["ft_test_error"]).dropna()
    inset.plot(a.loc[gain.index, "Delta_eff"], gain, "-", color=f"C{i}")
    # the simulated gain of the paired runs (one pool, both selections), extrapolated in 1/D
    g = gain_data[(gain_data["rho"] == rho) & (gain_data["lam_ft"] == "best")]
    if len(g):
        draw_simulation(inset, g["Delta_eff"], g["sim"], g["sim_se"], color=f"C{i}", marker="D",
                        legend=legend, kind="paired gain (inset): D → ∞ ± se, best λ'")
    legend.add(Line2D([], [], color=f"C{i}", lw=1.4, label=f"$\\rho={rho:g}$"))
legend.add(Line2D([], [], color="0.35", ls="-", lw=1.4, label="Alg. 1 (theory)"))
legend.add(Line2D([], [], color="0.35", ls="--", lw=1.4, label="uniform selection (theory)"))
inset.axhline(0.0, color="0.5", lw=0.6)
inset.set_title("gain $\\Delta\\mathcal{E}'$ = uniform − Alg. 1", fontsize=7)
inset.tick_params(labelsize=6)
axes[0].set_ylabel("$\\mathcal{E}'$")
axes[1].set_ylabel("$o_w$")
for ax in axes:
    ax.set_xlabel("$\\Delta_{\\rm eff}=\\Delta/2+Q_0-2M+Q$")
legend.draw(fig, ncol=3)
fig.suptitle(f"Active fine-tuning: $\\bar\\alpha'={alpha_ft_bar:g}$, $T={T}$, $\\Delta={Delta:g}$, "
             f"{activation}; best $\\lambda'$ of {lam_fts}", fontsize=9)
run.save(fig, "fig4")
plt.show()

# %% [markdown]
# ## The paper's readings, checked
#
# 1. active fine-tuning lowers $\mathcal E'$ and raises $o_w$ at every point: by the theory's
#    curves, and by the paired runs at their points (the verdict of the simulation: *fails* if a
#    gain is below 0 by more than 2 standard errors, *holds* if every one is above);
# 2. the gain $\Delta\mathcal E'$ is larger at large $\Delta_{\rm eff}$ and at small $\rho$;
# 3. the training channel's measured effective noise under the selection lies between eq. (28)
#    and eq. (25) (for the softmax's score, eq. (28) is the $z\to0$ limit);
# 4. theory and simulation agree (the agreement criterion), for both selections.

# %%
def reading4(claim, quantity, measured, holds, reason="", se=np.nan, partly=False):
    return reading(figure="fig4", claim=claim, location="§4, Fig. 4", quantity=quantity,
                   measured=measured, se=se, verdict=verdict_of(holds, partly), reason=reason)


def paired_reading(rho):
    """The reading "improves at every noise level" decided by the paired runs at ρ: fails if a
    point's gain (best λ', D → ∞) is below 0 by more than 2 se, holds if every one is above,
    partly otherwise; the reason lists every point's sign and its agreement with the theory."""
    g = gain_data[(gain_data["rho"] == rho) & (gain_data["lam_ft"] == "best")]
    if not len(g):
        return []
    signs = [gain_verdict(r.sim, r.sim_se) for r in g.itertuples()]
    worst = g["sim"].idxmin()
    points = "; ".join(f"Delta_eff = {r.Delta_eff:.3g}: {format_value(r.sim, r.sim_se)} "
                       f"({sign}; theory {format_value(r.theory, r.theory_se)}, z = {r.z:.1f}"
                       f"{'' if r.required else ', not required: several minima or replicon'})"
                       for r, sign in zip(g.itertuples(), signs, strict=True))
    return [reading4(
        "active learning improves the test error at every noise level",
        f"ρ = {rho:g}: smallest paired gain, simulation (D → ∞)", g.loc[worst, "sim"],
        "negative" not in signs and all(x == "positive" for x in signs), se=g.loc[worst, "sim_se"],
        partly="negative" not in signs, reason=f"paired runs at D = {paired_Ds}: {points}")]


rows, gains = [], {}
for rho in rhos:
    u = th[(th["rho"] == rho) & (th["selection"] == "uniform")].set_index("Q").sort_index()
    a = th[(th["rho"] == rho) & (th["selection"] == "active")].set_index("Q").sort_index()
    gain = u["ft_test_error"] - a["ft_test_error"]
    gain_se = np.hypot(u["ft_test_error_se"], a["ft_test_error_se"])
    gains[rho] = gain
    worst = gain.idxmin()
    rows.append(reading4(
        "active learning improves the test error at every noise level",
        f"ρ = {rho:g}: smallest gain E'(uniform) − E'(active), theory", gain[worst],
        bool((gain > 0).all()), se=gain_se[worst], partly=bool((gain > 0).any()),
        reason=f"at Delta_eff = {a.loc[worst, 'Delta_eff']:.3g} "
               f"({gain[worst] / gain_se[worst]:.1f} se)"))
    rows += paired_reading(rho)
    rows.append(reading4(
        "active learning raises the overlap", f"ρ = {rho:g}: smallest o_w(active) − o_w(uniform)",
        (a["overlap"] - u["overlap"]).min(), bool((a["overlap"] > u["overlap"]).all())))
    rows.append(reading4(
        "the gain grows with the effective noise",
        f"ρ = {rho:g}: gain at the largest − at the smallest Delta_eff",
        gain.iloc[-1] - gain.iloc[0], bool(gain.iloc[-1] > gain.iloc[0]),
        reason=f"from {gain.iloc[0]:.2g} to {gain.iloc[-1]:.2g}"))
    Qv = a.index.to_series()  # Q is the index here
    lo = noise.delta_eff_active(Delta, a["Q0"], Qv, a["M"])
    hi = noise.delta_eff(Delta, a["Q0"], Qv, a["M"])
    measured = a["info_Delta_eff_train"]
    rows.append(reading4(
        "the selected set's noise falls to eq. (28)",
        f"ρ = {rho:g}: largest (measured − eq. 28)/(eq. 25 − eq. 28)",
        ((measured - lo) / (hi - lo).where(hi > lo)).max(),
        bool(((measured - lo).abs() <= 0.02).all()),
        partly=bool(((measured >= lo - 0.02) & (measured <= hi + 0.02)).all()),
        reason="0 is eq. (28), 1 is eq. (25); partly: between the two"))
if len(rhos) > 1:
    small, large = min(rhos), max(rhos)
    rows.append(reading4(
        "the gain is larger at smaller ρ", f"gain at ρ = {small:g} − at ρ = {large:g} "
        "(largest Delta_eff)", gains[small].iloc[-1] - gains[large].iloc[-1],
        bool(gains[small].iloc[-1] > gains[large].iloc[-1])))
display(readings_table(rows))
# A reading that does not hold is a result to report (README figure notes), not asserted.

# %%
keys = ["rho", "selection", "Q", "lam_ft"]
# required at the replicon-stable points, reported at the others
table, check, check_unstable = run.compare(
    "fig4_agreement", sim, at_sims,
    keys, ["ft_test_error", "overlap"])
rows += agreement_readings("fig4", check, check_unstable)
rows += simulation_sizes("fig4", sim, keys)
run.write(readings_table(rows), "fig4_readings")
