"""Mutation testing of the unit tier: plant plausible bugs in a copy of lib/hdlora, one at a time.

Each mutant is (file, original snippet, replacement, description[, test files to try first]).
For every mutant the script copies ``lib/`` to a temporary directory (never touching the live
``lib/``), replaces the one occurrence of the snippet (and stops with an error if the snippet is
missing or ambiguous, so the list stays honest as the code changes), then runs the unit tier with
that copy first on ``PYTHONPATH``:

    PYTHONPATH=<tmp>/lib python -m pytest <tests> -x -q -p no:cacheprovider

A mutant is *killed* when pytest fails; a run past the per-mutant timeout gives no verdict and
is reported as TIMEOUT (an unexplained result, like a survivor). The test files named
with a mutant only order the work: they run first, and a mutant they do not kill is run against
the whole tier, so every verdict "survived" means "passes every unit test".

Survivors listed in EQUIVALENT (with the reason they cannot change a result) are reported but
accepted; any other survivor makes the script exit with status 1. The same list is mirrored in
the README's "Testing" section.

Before the mutants, the unit tier is run once on the unmutated copy (the baseline): a tier that
fails on its own would make every mutant look killed.

Usage: python tools/mutants.py [--tests DIR] [--lib DIR] [--only ID ...] [--exclude TEST ...]
                               [--timeout S] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    file: str  # relative to lib/hdlora
    original: str
    replacement: str
    description: str
    first: tuple[str, ...] = ()  # test files (relative to the tests dir) to run first


M = Mutant
MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- Params (boundaries)
    M(
        "params.py",
        "if self.T < 2:",
        "if self.T < 3:",
        "T = 2 rejected (off by one)",
        ("test_params.py",),
    ),
    M(
        "params.py",
        '"κ >= 1 (paper §2)", lambda x: x >= 1',
        '"κ >= 1 (paper §2)", lambda x: x > 1',
        "κ = 1 rejected (off by one)",
        ("test_params.py",),
    ),
    M(
        "params.py",
        '"Δ >= 0", lambda x: x >= 0',
        '"Δ >= 0", lambda x: x > 0',
        "Δ = 0 rejected (noiseless data impossible)",
        ("test_params.py",),
    ),
    M(
        "params.py",
        "int(D) != D or D < 2:",
        "int(D) != D or D < 1:",
        "D = 1 accepted",
        ("test_params.py",),
    ),
    M(
        "params.py",
        "if self.reuse and s.N_ft > s.N:",
        "if self.reuse and s.N_ft >= s.N:",
        "reuse with N' = N rejected (off by one)",
        ("test_params.py",),
    ),
    M(
        "params.py",
        '"α\' > 0", lambda x: x > 0',
        '"α\' > 0", lambda x: x >= 0',
        "α' = 0 accepted",
        ("test_params.py",),
    ),
    # ---------------------------------------------------------------- data of eq. (6)
    M(
        "model/data.py",
        "upper = torch.triu(g, diagonal=1) * (Delta / 2) ** 0.5",
        "upper = torch.triu(g, diagonal=1) * Delta**0.5",
        "off-diagonal noise variance Δ instead of Δ/2",
        ("test_data.py",),
    ),
    M(
        "model/data.py",
        "torch.diagonal(g, dim1=-2, dim2=-1)) * Delta**0.5",
        "torch.diagonal(g, dim1=-2, dim2=-1)) * (Delta / 2) ** 0.5",
        "diagonal noise variance Δ/2 instead of Δ",
        ("test_data.py",),
    ),
    M(
        "model/data.py",
        "        X = draw_sequences(n, teacher.D, params.T, generator)\n"
        "        xi = draw_noise(n, params.T, params.Delta, generator)\n    D = teacher.D",
        "        X = draw_sequences(n, teacher.D, params.T, generator)\n"
        "        xi = draw_noise(n, params.T, 2 * params.Delta, generator)\n    D = teacher.D",
        "fine-tuning noise ξ' (e = 0) with strength 2Δ",
        ("test_data.py",),
    ),
    M(
        "model/data.py",
        "X, xi = reuse_from.X[:n], reuse_from.xi[:n]",
        "X, xi = reuse_from.X[:n], 2**0.5 * reuse_from.xi[:n]",
        "reused noise (e = 1) rescaled: variance 2Δ",
        ("test_data.py",),
    ),
    M(
        "model/data.py",
        "    c = (W * W).sum() / (D * P**0.5)",
        "    c = (W * W).sum() / (D * P)",
        "population centring (34) with P⁻¹ instead of P^{-1/2}",
        ("test_data.py", "test_losses.py"),
    ),
    M(
        "model/data.py",
        "z_star = center(A_ext + outer, c_ext + c_w, centering) + xi",
        "z_star = center(A_ext + outer, c_ext, centering) + xi",
        "fine-tuning target centring drops q0 = ‖w*‖²/D",
        ("test_data.py",),
    ),
    M(
        "model/data.py",
        "chi_star = X @ teacher.w_star / D**0.5",
        "chi_star = X @ teacher.w_star / D",
        "χ* = D⁻¹ X w* (wrong scaling of the LoRA direction)",
        ("test_data.py",),
    ),
    # ---------------------------------------------------------------- eq. (1) and objectives
    M(
        "model/activations.py",
        "return x.softmax(dim=-1)",
        "return x.softmax(dim=-2)",
        "column-wise instead of row-wise softmax (torch)",
        ("test_losses.py",),
    ),
    M(
        "model/activations.py",
        "return x / x.shape[-1]",
        "return x / x.shape[-1] ** 2",
        "linear σ(x) = x/T² instead of x/T",
        ("test_losses.py",),
    ),
    M(
        "model/losses.py",
        "c = population_center(W_hat, w) if",
        "c = population_center(W_hat) if",
        "fine-tuning student centring drops q = ‖w‖²/D",
        ("test_losses.py",),
    ),
    M(
        "model/losses.py",
        "params.lam_ft * (w @ w)",
        "2 * params.lam_ft * (w @ w)",
        "factor 2 on λ' in the simulator's objective (3)",
        ("test_losses.py",),
    ),
    M(
        "model/losses.py",
        "params.lam * (W * W).sum()",
        "params.lam * (W * W).sum() / 2",
        "λ/2 instead of λ in the objective (2)",
        ("test_losses.py",),
    ),
    M(
        "model/losses.py",
        "return sample_errors(z, data, params).sum() + params.lam_ft",
        "return sample_errors(z, data, params).mean() + params.lam_ft",
        "objective (3) as a mean over samples (changes the weight of λ')",
        ("test_losses.py",),
    ),
    M(
        "model/losses.py",
        "return ((E @ data.gram) * E).sum(dim=(-1, -2))",
        "return ((E @ data.gram.transpose(-1, -2)) * E).sum(dim=(-1, -2))",
        "Gram matrix transposed in the sequence loss",
        ("test_losses.py",),
    ),
    # ---------------------------------------------------------------- simulation
    M(
        "simulation/starts.py",
        "if best is None or fit.objective < best.objective:",
        "if best is None or fit.objective > best.objective:",
        "best-of-n keeps the worst start",
        ("test_simulate.py",),
    ),
    M(
        "simulation/starts.py",
        "if float(fit.x @ w_star) < 0:",
        "if float(fit.x @ w_star) > 0:",
        "ŵ signed so that m ≤ 0",
        ("test_simulate.py",),
    ),
    M(
        "simulation/measure.py",
        '"Q0": float((W_star.T @ W_star).square().sum()) / (P0 * D**2)',
        '"Q0": float((W_star.T @ W_star).square().sum()) / (P * D**2)',
        "Q0 normalised with P instead of P0",
        ("test_simulate.py",),
    ),
    M(
        "simulation/measure.py",
        "forget = fine(exp.test)",
        "forget = fine(exp.test_ft)",
        "ℰ'' (84) measured on fine-tuning instead of pre-training samples",
        ("test_simulate.py",),
    ),
    M(
        "simulation/lbfgs.py",
        'converged = last["g"] <= gtol',
        "converged = True",
        "L-BFGS always reports convergence",
        ("test_simulate.py",),
    ),
    # ---------------------------------------------------------------- pre-training theory
    M(
        "theory/pretrain.py",
        "- M / (A0 * sqB) * samples.zeta",
        "+ M / (A0 * sqB) * samples.zeta",
        "sign in the pre-training conjugate M̂ (49)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/pretrain.py",
        "V = J1 / (2 * V_hat * eta)",
        "V = J1 / (V_hat * eta)",
        "factor 2 in V = J1/(2V̂η) (53)",
        ("test_replicon.py",),
    ),
    M(
        "theory/pretrain.py",
        "            2 * alpha / V**2 * (d * d).sum(axis=1),",
        "            alpha / V**2 * (d * d).sum(axis=1),",
        "factor 2 in Q̂ (50)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/pretrain.py",
        "    eps = 2 * math.sqrt(params.kappa) * params.lam / M_hat\n    J, J1",
        "    eps = math.sqrt(params.kappa) * params.lam / M_hat\n    J, J1",
        "ε = √κλ/M̂ instead of 2√κλ/M̂ in the input channel",
        ("test_replicon.py",),
    ),
    M(
        "theory/pretrain.py",
        "return oc.M_hat * edge / (2 * math.sqrt(params.kappa))",
        "return oc.M_hat * edge / math.sqrt(params.kappa)",
        "λ_c too large by 2",
        ("test_theory_pretrain.py",),
    ),
    M(
        "theory/prox.py",
        "        c = 4.0 / T**2\n",
        "        c = 2.0 / T**2\n",
        "linear proximal with the weight 2/T² instead of 4/T²",
        ("test_prox.py", "test_noise.py"),
    ),
    M(
        "theory/prox.py",
        "f = f + (d * d / (2 * V * s)).sum(axis=-1)",
        "f = f + (d * d / (2 * V)).sum(axis=-1)",
        "softmax proximal penalty without the multiplicity s_ab",
        ("test_prox.py",),
    ),
    M(
        "theory/laws.py",
        "z_star = np.sqrt(s * A0) * samples.g",
        "z_star = np.sqrt(A0) * samples.g",
        "z* of law 𝒬 (13) without the multiplicity 1 + δ_ab",
        ("test_theory_pretrain.py",),
    ),
    M(
        "theory/replicon.py",
        "inp = dd2 / (V_hat * V) ** 2",
        "inp = dd2 / V_hat**2",
        "replicon (75) without the 1/V² correction",
        ("test_replicon.py",),
    ),
    M(
        "theory/replicon.py",
        "M = np.linalg.inv(V * H) + np.eye(L)",
        "M = np.linalg.inv(V * H) - np.eye(L)",
        "replicon output factor (V∇²Ψ)⁻¹ − I",
        ("test_replicon.py",),
    ),
    # ---------------------------------------------------------------- fine-tuning theory
    M(
        "theory/prox_finetune.py",
        "dq_psi=np.trace(G, axis1=1, axis2=2)",
        "dq_psi=-np.trace(G, axis1=1, axis2=2)",
        "sign of ∂_qψ (72)",
        ("test_theory_finetune.py",),
    ),
    M(
        "theory/finetune.py",
        "- 2 * ap * r.dq_psi",
        "+ 2 * ap * r.dq_psi",
        "sign of the ∂_qψ term of v̂ (72)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/finetune.py",
        "+ m * T * q0 - m / v * r.trace_C)",
        "+ m * T * q0 + m / v * r.trace_C)",
        "sign of the Tr C term of m̂ (70)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/finetune.py",
        "(m_hat**2 + q_hat) * v_new**2",
        "q_hat * v_new**2",
        "q = q̂v² instead of (m̂² + q̂)v² (69)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/laws.py",
        "student = sigma(z + outer(c) - q * eye)",
        "student = sigma(z + outer(c) - q0 * eye)",
        "student centred with q0 instead of q in ℰ'",
        ("test_theory_finetune.py",),
    ),
    M(
        "theory/laws.py",
        "return (m / q0) * chi_star + math.sqrt(max(q - m * m / q0, 0.0)) * zeta",
        "return (m / q0) * chi_star + math.sqrt(max(q - m / q0, 0.0)) * zeta",
        "χ̃ of eq. (62) with variance q − m/q0",
        ("test_stationarity.py",),
    ),
    M(
        "theory/replicon.py",
        "M = np.linalg.inv(-v * hessian_F) + np.eye(T)",
        "M = np.linalg.inv(-v * hessian_F) - np.eye(T)",
        "fine-tuning replicon (78) sign",
        ("test_theory_finetune.py",),
    ),
    # ---------------------------------------------------------------- noises, Bayes, spectral
    M(
        "theory/noise.py",
        "return Delta / 2 + Q0 + Q - 2 * M",
        "return Delta / 2 + Q0 + Q - M",
        "Δ_eff (25) with −M instead of −2M",
        ("test_noise.py",),
    ),
    M(
        "theory/noise.py",
        "/ (1 + 4 * V / T**2) ** 2",
        "/ (1 + 4 * V / T**2)",
        "reused-sequence noise (107) with the printed-as-App.-C exponent",
        ("test_noise.py",),
    ),
    M(
        "theory/bayes.py",
        "return T * T + T - 2",
        "return T * T + T",
        "BO output channel (89) counts the invisible direction 11ᵀ",
        ("test_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "4 * math.pi**2 / (3 * Q_hat**2)",
        "2 * math.pi**2 / (3 * Q_hat**2)",
        "BO mmse (87) with 2π²/3 instead of 4π²/3",
        ("test_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "return 2 * (k - k * k / 2) / output_count",
        "return 2 * (k - k * k / 4) / output_count",
        "perfect-recovery threshold count",
        ("test_bayes.py",),
    ),
    M(
        "theory/spectral.py",
        "return float(tot[0]), float(4 * eta * tot[2]), float(-2 * tot[1])",
        "return float(tot[0]), float(2 * eta * tot[2]), float(-2 * tot[1])",
        "J1 = ∂_η J too small by 2",
        ("test_spectral.py",),
    ),
    # ---------------------------------------------------------------- §4 protocols
    M(
        "theory/laws.py",
        "keep = np.sort(np.argpartition(score, nb - 1)[:nb]) if nb < n_cand else np.arange(nb)",
        "keep = np.sort(np.argpartition(-score, nb - 1)[:nb]) if nb < n_cand else np.arange(nb)",
        "Algorithm 1 in the theory keeps the largest scores",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/laws.py",
        "return float(((upper + trace / 2) / (T * (T + 1) / 2)).mean())",
        "return float(((upper + trace) / (T * (T + 1) / 2)).mean())",
        "measured Δ_eff without the 1/(1 + δ_ab) of the diagonal",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/laws.py",
        "    z = beta * z\n",
        "    z = z\n",
        "recalibration not applied to the test fields of ℰ'",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/finetune.py",
        "z_tr = beta * z_tr",
        "z_tr = beta * beta * z_tr",
        "training fields scaled by β² instead of β (Q → β⁴Q)",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/recalibration.py",
        "L = c * (a * a * A0 + 2 * a * bb * M + bb * bb * Q)",
        "L = c * (a * a * A0 - 2 * a * bb * M + bb * bb * Q)",
        "ℒ(β) for linear σ with the cross term's sign flipped",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/recalibration.py",
        "L, L_se = pretrain_errors(zs, b * h, params, samples.blocks)",
        "L, L_se = pretrain_errors(zs, h, params, samples.blocks)",
        "ℒ(β) (Monte Carlo) of the unscaled training field",
        ("test_theory_protocols.py",),
    ),
    M(
        "theory/noise.py",
        "out = np.where(defined, M / np.where(defined, Q, 1.0), np.nan)",
        "out = np.where(defined, Q / np.where(defined, M, 1.0), np.nan)",
        "β* = Q/M instead of M/Q",
        ("test_theory_protocols.py",),
    ),
    M(
        "simulation/active.py",
        "keep = torch.argsort(score, stable=True)[:n_keep]",
        "keep = torch.argsort(-score, stable=True)[:n_keep]",
        "Algorithm 1 in the simulator keeps the largest scores",
        ("test_simulate_finetune.py", "test_simulate.py"),
    ),
    M(
        "simulation/pipeline.py",
        "return beta, (W if beta == 1.0 else math.sqrt(beta) * W), note",
        "return beta, (W if beta == 1.0 else beta * W), note",
        "recalibration Ŵ → β Ŵ instead of √β Ŵ",
        ("test_simulate.py",),
    ),
    M(
        "simulation/finetune_only.py",
        "z = s.sqrt() * (M / math.sqrt(A0) * g + math.sqrt(B) * zeta)",
        "z = s.sqrt() * (M / A0 * g + math.sqrt(B) * zeta)",
        "frozen field of the shortcut with covariance M/√A0 instead of M",
        ("test_simulate_finetune.py",),
    ),
    # ---------------------------------------------------------------- speed (issue 10)
    M(
        "theory/rowops.py",
        "    e /= sum_last(e, keepdims=True)\n",
        "    e /= max_last(e, keepdims=True)\n",
        "the theory's fast softmax normalised by its largest term instead of the sum",
        ("test_prox.py", "test_theory_pretrain.py"),
    ),
    M(
        "theory/prox.py",
        "B -= A[..., :, None] @ (2.0 * P)[..., None, :]",
        "B -= P[..., :, None] @ (2.0 * A)[..., None, :]",
        "softmax row Hessian with the a pᵀ term transposed (not symmetric)",
        ("test_prox.py",),
    ),
    M(
        "theory/prox_finetune.py",
        "sum_wB = ((chi * chi)[:, None, :] @ B",
        "sum_wB = (chi[:, None, :] @ B",
        "fine-tuning Hessian with Σ_a χ_a B_a instead of Σ_a χ_a² B_a",
        ("test_prox.py", "test_theory_finetune.py"),
    ),
    M(
        "theory/finetune.py",
        "informed.phi - uninformed.phi > margin",
        "uninformed.phi - informed.phi > margin",
        "the coarse uninformed point kept when it wins the selection (not when it loses)",
        ("test_precision.py",),
    ),
    M(
        "theory/sweep.py",
        "pre_rows.update(zip(todo, recs, strict=True))",
        "pre_rows.update(zip(todo, recs[::-1], strict=True))",
        "sweep rows given the pre-training record of another β",
        ("test_theory_protocols.py", "test_precision.py"),
    ),
    M(
        "theory/driver.py",
        "        every = stage.every_start_rounds and not fell_back\n",
        "        every = False\n",
        "later rounds of the fixed point keep the warm-started (path-dependent) proximal map",
        ("test_precision.py",),
    ),
    # ---------------------------------------------------------------- harness: results on disk
    M(
        "harness/io.py",
        "if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):",
        "if not np.allclose(x, y, rtol=1e-3, atol=atol, equal_nan=True):",
        "a table not rewritten when a number moves by less than 1e-3 (a real change hidden)",
        ("test_harness.py",),
    ),
    M(
        "harness/io.py",
        "elif not (a.astype(str).to_numpy() == b.astype(str).to_numpy()).all():",
        "elif False:",
        "a changed text cell does not rewrite a table",
        ("test_harness.py",),
    ),
    M(
        "harness/io.py",
        "return a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= tol",
        "return a.shape == b.shape",
        "a figure whose picture changed is not rewritten",
        ("test_harness.py",),
    ),
    M(
        "harness/tables.py",
        "        if now != version:\n",
        "        if now != version and False:\n",
        "a table whose code changed passes the committed-data check",
        ("test_harness.py",),
    ),
    M(
        "harness/tables.py",
        "    if record is not None:\n        write_provenance(path, record)\n",
        "    if record is not None and df is None:\n        write_provenance(path, record)\n",
        "no provenance record for a table computed or reused",
        ("test_harness.py",),
    ),
    # ---------------------------------------------------------------- harness: agreement
    M(
        "harness/agreement.py",
        "    if len(r) >= 2:\n",
        "    if False:\n",
        "per-observable standard error pooled over points assumed independent (seeds ignored)",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        "np.sqrt(r.var(ddof=1) / len(r) + se_th2)",
        "np.sqrt(r.var(ddof=1) + se_th2)",
        "standard error of the mean over seeds without the 1/n_seeds",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        "a = np.linalg.lstsq(A, y, rcond=None)[0][0] if np.all(np.isfinite(y)) else np.nan",
        "a = y[-1]",
        "per-seed deviations taken at the largest D, not extrapolated like the means",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        "    return float(stats.t.ppf(1 - family_error / (2 * n_comparisons), dof))",
        "    return float(stats.t.ppf(1 - family_error / 2, dof))",
        "no Bonferroni correction of the threshold",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        'finite &= rows["sim_inf_se"].to_numpy(float) > 0',
        'finite &= rows["sim_inf_se"].to_numpy(float) >= 0',
        "a zero standard error (one run, or identical runs) passes instead of failing",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        'row["sim_inf"], row["sim_inf_se"] = fit_intercept(x, y, st["se"].to_numpy())',
        'row["sim_inf"], row["sim_inf_se"] = y[-1], st["se"].to_numpy()[-1]',
        "simulations compared at the largest D, no extrapolation to D → ∞",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        "            if not np.all(np.isfinite(grp[col].to_numpy(float))):",
        "            if False:",
        "a failed run (NaN) dropped from its point's mean instead of failing the point",
        ("test_properties.py",),
    ),
    M(
        "harness/agreement.py",
        '        return AgreementCheck(False, float("nan"), empty, empty, 0, 0, 0)',
        '        return AgreementCheck(True, float("nan"), empty, empty, 0, 0, 0)',
        "an empty agreement table passes",
        ("test_properties.py",),
    ),
    # ---------------------------------------------------------------- spectral: density, support
    M(
        "theory/spectral.py",
        "return np.abs(_g_support(np.asarray(x, dtype=float), eta, kappa0).imag) / np.pi",
        "return np.abs(_g_support(np.asarray(x, dtype=float), eta, kappa0).imag) / (2 * np.pi)",
        "density ρ = |Im g|/(2π): half the mass",
        ("test_spectral.py",),
    ),
    M(
        "theory/spectral.py",
        "        if disc(0.5 * (lo + hi)) < 0:",
        "        if disc(0.5 * (lo + hi)) <= 0 or True:",
        "support: every gap between edges counted as support",
        ("test_spectral.py",),
    ),
    M(
        "theory/spectral.py",
        "        if lo <= merged[-1][1] + 1e-12 * scale:",
        "        if True:",
        "support: separate intervals merged across their gap",
        ("test_spectral.py",),
    ),
    # ---------------------------------------------------------------- drawn quantities (issue 21)
    M(
        "theory/laws.py",
        "forget = ((student - sigma(zs)) ** 2).sum(axis=(1, 2))",
        "forget = ((student - sigma(z)) ** 2).sum(axis=(1, 2))",
        "ℰ'' (84) against σ(z) instead of the pre-training target σ(z*)",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/laws.py",
        "forget = ((student - sigma(zs)) ** 2).sum(axis=(1, 2))",
        "forget = ((sigma(z - q * eye) - sigma(zs)) ** 2).sum(axis=(1, 2))",
        "ℰ'' (84) without the LoRA term χχᵀ",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "    logw = -(frob - ones**2 / T**2) / (4 * V_bo)",
        "    logw = -(frob + ones**2 / T**2) / (4 * V_bo)",
        "BO Z'_out (96): the sign of the (Σχ̃)² term",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "    logw = -(frob - ones**2 / T**2) / (4 * V_bo)",
        "    logw = -(frob - ones**2 / T**2) / (2 * V_bo)",
        "BO Z'_out (96) with 1/(2V_BO) for 1/(4V_BO)",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "    return (mean - omega) / v\n",
        "    return (mean - omega) / (2 * v)\n",
        "BO g'_out with 1/(2v)",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/bayes.py",
        "omega = q * chi_s + math.sqrt(max(q - q * q, 0.0)) * zeta",
        "omega = math.sqrt(q) * chi_s + math.sqrt(max(q - q * q, 0.0)) * zeta",
        "BO q̂ (95): ω regressed on χ* with √q instead of q (eq. 93)",
        ("test_references_forgetting_bayes.py",),
    ),
    M(
        "theory/replicon.py",
        "M = np.linalg.inv(-v * hessian_F) + np.eye(T)",
        "M = np.linalg.inv(-hessian_F / v) + np.eye(T)",
        "fine-tuning replicon (78) with 1/v for v",
        ("test_replicon_references.py",),
    ),
    M(
        "theory/replicon.py",
        "    value = 2 * params.alpha * out_iso * inp\n",
        "    value = params.alpha * out_iso * inp\n",
        "pre-training replicon (75) with α for 2α",
        ("test_replicon_references.py",),
    ),
    M(
        "theory/replicon.py",
        "    if isotropic:\n",
        "    if False:\n",
        "pre-training replicon (75) in the entries h, not the isotropic u = h/√s",
        ("test_replicon_references.py",),
    ),
    # ---------------------------------------------------------------- readings as data
    M(
        "harness/readings.py",
        "digits = max(0, 1 - math.floor(math.log10(se)))",
        "digits = max(0, -math.floor(math.log10(se)))",
        "a reading's value printed with one digit too few for its standard error",
        ("test_readings.py",),
    ),
    M(
        "harness/readings.py",
        'lines.append("| " + " | ".join(c.replace("|", "\\\\|") for c in cells) + " |")',
        'lines.append("| " + " | ".join(cells) + " |")',
        "a | in a claim breaks the README's table",
        ("test_readings.py",),
    ),
    # ---------------------------------------------------------------- dense curves (issue 22)
    M(
        "harness/extrema.py",
        "    v = -b / (2 * a)\n",
        "    v = -b / a\n",
        "located optimum: vertex −b/a for −b/2a",
        ("test_extrema.py",),
    ),
    M(
        "harness/extrema.py",
        "    grad = np.array([b / (2 * a * a), -1 / (2 * a)])\n",
        "    grad = np.array([0.0, -1 / (2 * a)])\n",
        "located optimum: standard error without the curvature's uncertainty",
        ("test_extrema.py",),
    ),
    M(
        "harness/extrema.py",
        "    if i in (0, len(x) - 1):\n",
        "    if False:\n",
        "located optimum: an optimum at the grid's edge passed as a location",
        ("test_extrema.py",),
    ),
    M(
        "theory/noise.py",
        "    defined = Q > ZERO_PREDICTOR_Q * np.asarray(Q0, dtype=float)\n",
        "    defined = Q > 0\n",
        "β* of a pre-training at rounding level reported as a number",
        ("test_noise.py",),
    ),
    M(
        "theory/pretrain.py",
        "    if params.lam < stage.lam_c and not _nonzero(sol.x, params.Q0):\n",
        "    if False:\n",
        "pre-training collapsed onto Ŵ ≈ 0 below λ_c passed as converged",
        ("test_theory_pretrain.py",),
    ),
    # ---------------------------------------------------------------- the one driver (issue 19)
    M(
        "theory/driver.py",
        "return max(distinct, key=lambda k: found[k].phi), 2",
        "return min(distinct, key=lambda k: found[k].phi), 2",
        "the fixed point with the smaller free entropy selected",
        ("test_theory_pretrain.py", "test_precision.py"),
    ),
    M(
        "theory/pretrain.py",
        "        - np.mean(objective)\n",
        "        + np.mean(objective)\n",
        "E max Ψ with the wrong sign in the pre-training free entropy (21)",
        ("test_stationarity.py",),
    ),
    M(
        "theory/driver.py",
        "        per[:, list(pin)] = 0.0\n",
        "        pass\n",
        "the pinned conjugate m̂ of the uninformed point kept as its sample noise",
        ("test_precision.py", "test_theory_protocols.py"),
    ),
    # ---------------------------------------------------------------- the simulator's rooms
    M(
        "simulation/pipeline.py",
        'return noise.beta_star(op["Q"], op["M"], op["Q0"])',
        'return noise.beta_star(op["M"], op["Q"], op["Q0"])',
        "the simulation's β* = Q/M instead of M/Q (beta=None)",
        ("test_simulate.py",),
    ),
    M(
        "simulation/starts.py",
        "        n_iter += fit.n_iter\n",
        "        n_iter = fit.n_iter\n",
        "a record's n_iter counts the last stage only",
        ("test_simulate.py",),
    ),
    # ---------------------------------------------------------------- one definition each
    M(
        "simulation/experiment.py",
        "            p = params.replace(lam_ft=lam_ft)\n",
        "            p = self.params\n",
        "the fine-tuning stage fits at the experiment's λ' instead of the one asked for",
        ("test_simulate.py",),
    ),
    M(
        "theory/newton.py",
        "    n_failed = int((res > tol).sum())\n",
        "    n_failed = 0\n",
        "a proximal's samples above tolerance neither counted nor warned about",
        ("test_prox.py",),
    ),
    M(
        "theory/noise.py",
        "    if np.isnan(b):\n",
        "    if b is None:\n",
        "beta=None at the zero predictor passes an undefined β* on as NaN",
        ("test_noise.py",),
    ),
    M(
        "simulation/measure.py",
        "    n_test = 10 * D if n_test is None else n_test\n",
        "    n_test = D if n_test is None else n_test\n",
        "the default test set of D sequences instead of 10 D (App. D)",
        ("test_simulate.py", "test_simulate_finetune.py"),
    ),
    M(
        "harness/run.py",
        "                args = {**common, **call}\n",
        "                args = {**call, **common}\n",
        "run.calls: the common arguments override a call's own",
        ("test_harness.py",),
    ),
    M(
        "theory/pretrain.py",
        "        Q_hat=Q_hat,\n        M_hat=M_hat,\n",
        "        Q_hat=M_hat,\n        M_hat=Q_hat,\n",
        "the pre-training record with M̂ and Q̂ swapped",
        ("test_theory_pretrain.py", "test_stationarity.py"),
    ),
    M(
        "harness/agreement.py",
        '    zero = out["q"].to_numpy(float) < q_zero\n',
        '    zero = out["q"].to_numpy(float) < -q_zero\n',
        "o_w kept where ŵ = 0 (a stray cosine averaged into the overlap)",
        ("test_agreement.py",),
    ),
    M(
        "harness/agreement.py",
        '        runs = sim.drop_duplicates(subset=[*pre, "D", "seed"])\n',
        "        runs = sim\n",
        "a pre-training error compared at every λ', its repeated rows taken as independent runs",
        ("test_agreement.py",),
    ),
    M(
        "harness/plots.py",
        "    cut = np.flatnonzero(branch[1:] != branch[:-1]) + 1\n",
        "    cut = np.flatnonzero(branch[1:] != branch[1:]) + 1\n",
        "a first-order jump drawn as a sloped line (no break between fixed points)",
        ("test_plots.py",),
    ),
    M(
        "harness/run.py",
        '        if self.profile != "smoke" and not check.passed:\n',
        "        if False:\n",
        "a figure whose simulations disagree with the theory passes silently",
        ("test_harness.py",),
    ),
    M(
        "harness/run.py",
        "        if name in self._cached:\n",
        "        if False:\n",
        "a notebook writes a summary over its own cache (recomputed every run)",
        ("test_harness.py",),
    ),
    M(
        "harness/extrema.py",
        '    x_star = float(f"{math.exp(u0 + v) if log else u0 + v:.10g}")\n',
        "    x_star = math.exp(u0 + v) if log else u0 + v\n",
        "a located x with the fit's last bits (keys move with the BLAS thread count)",
        ("test_extrema.py",),
    ),
    # ---------------------------------------------------------------- equivalent by design
    M(
        "theory/newton.py",
        "armijo = f_try <= fi[k] + 1e-4 * t[k] * slope[k]",
        "armijo = f_try <= fi[k] + 1e-3 * t[k] * slope[k]",
        "Armijo constant 1e-4 → 1e-3 in the batched Newton",
        ("test_prox.py",),
    ),
    # ---------------------------------------------------------------- paired gain, executors
    M(
        "simulation/paired.py",
        "z_star_ext, z = z_star_pool[:n], z_pool[:n]",
        "z_star_ext, z = z_star_pool[-n:], z_pool[:n]",
        "uniform subset: teacher fields and student fields of different candidates",
        ("test_paired.py",),
    ),
    M(
        "simulation/paired.py",
        "self.train = self._labelled(self.train.X, z_star_ext.to(**conv))",
        "self.train = self._labelled(self.train.X.flip(0), z_star_ext.to(**conv))",
        "uniform protocol: other training sequences than the active one (not paired)",
        ("test_paired.py",),
    ),
    M(
        "harness/paired.py",
        'return (wide["uniform"] - wide["active"]).rename("gain")',
        'return (wide["active"] - wide["uniform"]).rename("gain")',
        "gain of a run with its sign flipped",
        ("test_paired.py",),
    ),
    M(
        "harness/paired.py",
        'row["sim"], row["sim_se"] = fit_intercept(1.0 / x, y, se)',
        'row["sim"], row["sim_se"] = fit_intercept(x, y, se)',
        "gain extrapolated in D instead of 1/D",
        ("test_paired.py",),
    ),
    M(
        "harness/executors.py",
        "            reraise(caught)\n",
        "",
        "a job's warnings dropped by the executor",
        ("test_executors.py",),
    ),
    M(
        "harness/executors.py",
        "stored = [store.get(i) if store is not None else None for i in range(len(jobs))]",
        "stored = [None for i in range(len(jobs))]",
        "an interrupted table's finished jobs run again (the store never read)",
        ("test_executors.py", "test_harness.py"),
    ),
    M(
        "harness/checkpoints.py",
        'return self.folder / f"{index}.pkl"',
        'return self.folder / f"{index % 2}.pkl"',
        "two jobs of one table stored in one file (a job's rows given to another)",
        ("test_executors.py", "test_harness.py"),
    ),
    M(
        "harness/run.py",
        'return JobStore(self.data_dir.parent / "build" / "jobs" / name / key)',
        'return JobStore(self.data_dir.parent / "build" / "jobs" / name)',
        "stored jobs reused by a computation under another key (another argument)",
        ("test_harness.py",),
    ),
    M(
        "harness/tables.py",
        'RECOMPUTE_IGNORES = OPTIMISER_DIAGNOSTICS + r"|message|info_device"',
        'RECOMPUTE_IGNORES = OPTIMISER_DIAGNOSTICS + r"|message|info_device|E"',
        "a recomputed cache kept although a result column moved",
        ("test_harness.py",),
    ),
    # ---------------------------------------------------------------- the compiled proximal
    M(
        "theory/compiled.py",
        "        g[j] += d / pen[j]\n",
        "        g[j] += 2.0 * d / pen[j]\n",
        "compiled proximal: the penalty's gradient twice too large",
        ("test_compiled.py",),
    ),
    M(
        "theory/compiled.py",
        "            B[a, i, i] += 2.0 * (a_i - S * p_i)\n",
        "            B[a, i, i] += 2.0 * a_i\n",
        "compiled softmax row Hessian without the −S p term on its diagonal",
        ("test_compiled.py",),
    ),
    M(
        "theory/compiled.py",
        "                G[a, j] = 2.0 * r / T\n",
        "                G[a, j] = 2.0 * r\n",
        "compiled linear row: the gradient without the 1/T of σ(x) = x/T",
        ("test_compiled.py",),
    ),
    M(
        "theory/compiled.py",
        "                    s += x[a] * x[a] * B[a, c, d]\n",
        "                    s += x[a] * B[a, c, d]\n",
        "compiled fine-tuning Hessian with Σ_a χ_a B_a instead of Σ_a χ_a² B_a",
        ("test_compiled.py",),
    ),
    M(
        "theory/compiled.py",
        "        c /= max(abs(w[m]), floor)\n",
        "        c /= max(w[m], floor)\n",
        "compiled Newton step: negative curvature not flipped (not a descent direction)",
        ("test_compiled.py",),
    ),
    M(
        "theory/precision.py",
        "    parts = np.append(c * (fc.map_cov @ c), se_test**2)\n",
        "    parts = np.append(c * (fc.map_cov @ grad), se_test**2)\n",
        "variance shares without the propagation (I − J)⁻¹ on one side",
        ("test_precision.py",),
    ),
    # ---------------------------------------------------------------- basin hopping
    M(
        "simulation/search.py",
        "fit.objective < current.objective - margin",
        "fit.objective > current.objective + margin",
        "basin hopping moves to higher minima",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "HOP_STEP = 2.0",
        "HOP_STEP = 0.05",
        "basin-hopping moves too small to leave a basin",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "        xi = seeded_normal([*key, h], (D,), best.x.device, best.x.dtype)\n",
        "        xi = seeded_normal([*key, 0], (D,), best.x.device, best.x.dtype)\n",
        "every basin-hopping move in the same direction",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "    K = np.eye(T) - q0 * np.linalg.inv(posterior + 1e-12 * np.eye(T))\n",
        "    K = np.eye(T) + q0 * np.linalg.inv(posterior + 1e-12 * np.eye(T))\n",
        "Bayes preprocessing with the sign of E[χχᵀ | y]⁻¹ flipped",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "    r = r0 - kappa * dz\n",
        "    r = r0\n",
        "Bayes preprocessing without removing the frozen field κ z",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "    s = multiplicity(T)\n",
        "    s = np.ones_like(multiplicity(T))\n",
        "difference covariance without the 1 + δ_ab of the diagonal entries",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        '"ft_search_settled": last <= len(hops) - min(SETTLED_MOVES, len(hops)),',
        '"ft_search_settled": last <= len(hops),',
        "a search still descending at its last move reported as settled",
        ("test_search.py",),
    ),
    # ---------------------------------------------------------------- the default search
    M(
        "simulation/experiment.py",
        "            return ft.X, ft.target, z, params.activation\n",
        "            return ft.X, ft.target, A_frozen, params.activation\n",
        "the pipeline's Bayes start reads the uncentred frozen field",
        ("test_simulate.py",),
    ),
    M(
        "simulation/search.py",
        "    bayes_start: bool = True,\n    **options,\n",
        "    bayes_start: bool = False,\n    **options,\n",
        "the simulators' default without the Bayes start",
        ("test_search.py",),
    ),
    M(
        "simulation/starts.py",
        "        info |= starts_info(fit, STAGE_PREFIX[stage]) | fit.search\n",
        "        info |= starts_info(fit, STAGE_PREFIX[stage])\n",
        "the record drops what the search did",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        'return len(finite) >= AGREEING_STARTS and starts_summary(fit)["n_minima"] == 1',
        'return starts_summary(fit)["n_minima"] == 1',
        "the search skipped when a single start 'agrees' with itself",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "        0 if skipped else basin_hops,\n",
        "        0 if not skipped else basin_hops,\n",
        "the search moves where the starts agree and not where they disagree",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "    fit.search = search_info(fit, [], bayes_start=False, skipped=False)\n",
        "",
        "the frozen model's record lacks the search's columns",
        ("test_simulate.py",),
    ),
    M(
        "simulation/search.py",
        'not any(m["accepted"] for m in hops[-SETTLED_MOVES:])',
        'not any(m["accepted"] for m in hops[-1:])',
        "the search stops after one move that found nothing lower",
        ("test_search.py",),
    ),
    M(
        "simulation/search.py",
        "    kappa = float((r0 * dz).sum() / dz2) if dz2 > 0 else 0.0",
        "    kappa = float((r0 * dz).sum() / dz2)",
        "Bayes preprocessing of a zero frozen field (Ŵ = 0): κ = 0/0",
        ("test_search.py",),
    ),
    M(
        "harness/plots.py",
        '    for part, face in ((ok, None), (~ok, "white")):',
        "    for part, face in ((ok, None), (~ok, None)):",
        "simulations where the replicon is ≥ 1 not drawn apart",
        ("test_plots.py",),
    ),
    M(
        "harness/io.py",
        "        if not np.isclose(fx, fy, rtol=rtol, atol=atol, equal_nan=True):\n",
        "        if fx != fy:\n",
        "numbers in a text column compared exactly (rounding noise rewrites a readings table)",
        ("test_harness.py",),
    ),
    M(
        "harness/tables.py",
        "groups.setdefault(p.replace(lam_ft=math.inf), [])",
        "groups.setdefault(p.replace(lam_ft=math.inf, lam=1.0), [])",
        "lam_ft_jobs shares one pre-training across points of different λ",
        ("test_harness.py",),
    ),
]

#: survivors that cannot change any result, with the reason (mirrored in README, "Testing")
EQUIVALENT: dict[str, str] = {
    "model/losses.py: Gram matrix transposed in the sequence loss": (
        "G = X Xᵀ/D is symmetric, so E G Eᵀ and E Gᵀ Eᵀ are the same number"
    ),
    "theory/newton.py: Armijo constant 1e-4 → 1e-3 in the batched Newton": (
        "the sufficient-decrease constant changes which step lengths are accepted, not the "
        "stationary point the solver stops at (max|∇F| ≤ tol is checked either way)"
    ),
}


def key(m: Mutant) -> str:
    return f"{m.file}: {m.description}"


def apply(lib_root: Path, m: Mutant) -> None:
    """Replace the one occurrence of ``m.original`` in the copy; fail loudly otherwise."""
    path = lib_root / "hdlora" / m.file
    text = path.read_text()
    count = text.count(m.original)
    if count != 1:
        raise SystemExit(
            f"mutant '{key(m)}': the snippet occurs {count} times in lib/hdlora/{m.file} "
            f"(expected exactly 1); update tools/mutants.py\n  snippet: {m.original!r}"
        )
    path.write_text(text.replace(m.original, m.replacement))


def run_pytest(
    lib_root: Path, tests: list[str], timeout: float, extra: tuple[str, ...] = ()
) -> tuple[bool | None, str]:
    """(failed, the first failure); ``None`` when pytest ran past ``timeout`` (no verdict)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(lib_root) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never reuse a stale .pyc of another mutant
    env["HDLORA_PROGRESS"] = "0"
    # test_committed_data compares the committed tables with the code's version: any mutant
    # changes that version, so it would "kill" every mutant without testing a number
    skip = ["--ignore-glob", "*/test_committed_data.py"]
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", *skip]
    cmd += list(extra)
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else p.stderr.strip().splitlines()[-1:]
    if p.returncode == 0:
        return False, str(last)
    if p.returncode not in (1,):  # 2: interrupted/collection error, 3: internal, 4: usage
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        return True, f"pytest exit {p.returncode}: {(failed or [last])[0]}"
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return True, (failed[0] if failed else str(last))


def check_import(lib_root: Path) -> None:
    """The copy, not the editable install, must be what ``import hdlora`` finds."""
    env = dict(os.environ, PYTHONPATH=str(lib_root), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run(
        [sys.executable, "-c", "import hdlora; print(hdlora.__file__)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(lib_root.resolve()):
        raise SystemExit(f"PYTHONPATH does not take precedence: hdlora imported from {out}")
    print(f"mutants import hdlora from the copy: {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", default="tests", help="the unit-test directory (default tests)")
    ap.add_argument("--only", nargs="*", type=int, help="run only these mutant numbers")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--lib", default=str(ROOT / "lib"), help="the lib/ to copy (default lib/)")
    ap.add_argument(
        "--exclude", nargs="*", default=[], help="names of test functions to leave out (-k)"
    )
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run of the unit tier"
    )
    args = ap.parse_args(argv)

    if args.list:
        for i, m in enumerate(MUTANTS):
            print(f"{i:2d}  {key(m)}")
        return 0
    tests_dir = Path(args.tests)
    if not (ROOT / tests_dir).is_dir() and not tests_dir.is_dir():
        raise SystemExit(f"no test directory {tests_dir}")
    chosen = [(i, m) for i, m in enumerate(MUTANTS) if args.only is None or i in args.only]
    stale = set(EQUIVALENT) - {key(m) for m in MUTANTS}
    if stale:
        raise SystemExit(f"EQUIVALENT names mutants that do not exist: {sorted(stale)}")

    extra = ("-k", " and ".join(f"not {name}" for name in args.exclude)) if args.exclude else ()
    results = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hdlora-mutants-") as tmp:
        lib_root = Path(tmp) / "lib"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(Path(args.lib), lib_root, ignore=ignore)
        check_import(lib_root)
        # every snippet must be present before any time is spent (in the copy: a snapshot)
        for _, m in chosen:
            text = (lib_root / "hdlora" / m.file).read_text()
            if text.count(m.original) != 1:
                apply(lib_root, m)  # raises with the explanation
        if not args.no_baseline:
            t0 = time.perf_counter()
            failed, why = run_pytest(lib_root, [str(tests_dir)], args.timeout, extra)
            if failed is not False:
                raise SystemExit(f"the unit tier does not pass without a mutant: {why}")
            print(f"baseline: the unit tier passes on the copy ({time.perf_counter() - t0:.0f} s)")
        for i, m in chosen:
            pristine = (lib_root / "hdlora" / m.file).read_text()
            apply(lib_root, m)
            t0 = time.perf_counter()
            try:
                first = [str(tests_dir / f) for f in m.first if (tests_dir / f).exists()]
                if key(m) in EQUIVALENT:  # expected to survive: straight to the whole tier
                    first = []
                killed, why = (False, "")
                if first:
                    killed, why = run_pytest(lib_root, first, args.timeout, extra)
                if killed is False:
                    killed, why = run_pytest(lib_root, [str(tests_dir)], args.timeout, extra)
            finally:
                (lib_root / "hdlora" / m.file).write_text(pristine)
            dt = time.perf_counter() - t0
            if killed is None:  # a hang is not a kill: it needs a look (or a longer --timeout)
                status = "TIMEOUT"
            elif killed:
                status = "killed"
            else:
                status = "equivalent" if key(m) in EQUIVALENT else "SURVIVED"
            results.append((i, m, status, why, dt))
            print(f"[{i:2d}] {status:10s} {dt:6.1f}s  {key(m)}", flush=True)
            if killed is not False:
                print(f"      {'by ' if killed else ''}{why}", flush=True)

    n = len(results)
    n_killed = sum(r[2] == "killed" for r in results)
    n_equiv = sum(r[2] == "equivalent" for r in results)
    unexplained = [r for r in results if r[2] in ("SURVIVED", "TIMEOUT")]
    width = max(len(key(r[1])) for r in results)
    print("\n" + "-" * (width + 24))
    print(f"{'#':>3}  {'mutant':{width}s}  {'status':10s}  time")
    for i, m, status, _, dt in results:
        print(f"{i:3d}  {key(m):{width}s}  {status:10s}  {dt:5.1f}s")
    print("-" * (width + 24))
    score = n_killed / max(n - n_equiv, 1)
    print(
        f"killed {n_killed} of {n}; {n_equiv} explained equivalent; {len(unexplained)} unexplained "
        f"survivors; mutation score {n_killed}/{n - n_equiv} = {100 * score:.0f}% "
        f"(equivalent mutants excluded); {time.perf_counter() - t_start:.0f} s"
    )
    for _, m, status, _, _ in results:
        if status == "equivalent":
            print(f"  equivalent: {key(m)}: {EQUIVALENT[key(m)]}")
    if unexplained:
        print("UNEXPLAINED SURVIVORS (kill them with a test, or explain them in EQUIVALENT):")
        for _, m, status, _, _ in unexplained:
            print(f"  {status}: {key(m)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
