r"""The state-evolution fixed points are stationary points of the free entropies (Results 4, 5).

Independent check of every fixed-point equation of both state evolutions at once: the free
entropies are written here from the paper, not from the solvers,

* pre-training, eq. (21) = (45), with Ψ of eq. (42) and the fields (z*, z̃) of eq. (47):
      Φ = −M M̂/(2α) + (Q V̂ − V Q̂)/(4α) + M̂²/(4α V̂) J(Q̂^{1/2}/M̂, 2√κ λ/M̂)
          + E max_h Ψ(h; z*, z̃),
      Ψ(h) = −‖σ(h) − σ(z*)‖²_F − Σ_{a≤b} (z̃_ab − h_ab)² / (2V(1 + δ_ab));
* fine-tuning, eq. (22) = (65), with χ̃ of eq. (62), ψ of eq. (63) and the side fields
  (z*, z) of eq. (61) (z = z̃ of eq. (47) for e = 0, z = Prox(z*, z̃) of eq. (41) for e = 1):
      φ = −m m̂/α' + (q v̂ − v q̂)/(2α') + (m̂² + q̂)/(2α'(2λ' + v̂)) + E max_χ ψ(χ; χ*, χ̃, z*, z),
      ψ(χ) = −‖σ(z + χχᵀ − q I) − σ(z* + χ*χ*ᵀ − I)‖²_F − ‖χ̃ − χ‖²/(2v),

and all six partial derivatives are taken by central finite differences at the point returned
by ``pretrain`` / ``finetune``. The expectations use the solvers' own Monte-Carlo draws
(``PretrainSamples`` / ``FinetuneSamples`` with the same n_mc, seed and sampling method: common
random numbers),
mapped to fields by eqs. (47) and (62) written here; only the inner maximisers (the library's
proximals) and J (tested against quadrature in test_spectral.py) are borrowed. The values
Ψ(h), ψ(χ) at the maximisers are computed here from eqs. (42), (63) with a softmax written here,
so a maximiser of a different function would show up as a first-order error.

Tolerances, decided in advance:

* Pathwise-exact derivatives. For a fixed set of samples, eqs. (49)–(51) are exactly the
  derivatives of the sample average of max Ψ (chain rule through z̃(Q, M) of eq. (47) and the
  envelope theorem), and eqs. (52)–(54), (67)–(69), (71) are exact derivatives of the
  algebraic terms. So ∂Φ/∂(Q, M, V, Q̂, M̂, V̂) and ∂φ/∂(v, m̂, q̂, v̂) vanish at the solver's
  point up to: the solver tolerance (1e-10), the proximal tolerance (1e-10 on the gradient,
  i.e. ~1e-20 on max Ψ), J's quadrature (1e-13 relative, i.e. 1e-9 after dividing by the
  step) and the truncation error of the central difference with relative step 1e-4, ~(1e-4)²
  = 1e-8 relative (e.g. for the 1/V̂ of the J term). Each derivative is compared with the
  largest of the parts that cancel in it (coupling terms, J term, channel term):
  |∂| ≤ EXACT_TOL · scale with EXACT_TOL = 1e-6, ≥ 100× this budget. A 2 % error in one
  conjugate shifts the balance by ~2e-2 · scale: the perturbed-point tests below must fail.
* Stein derivatives. Eqs. (70) and (72) replace E[(χ − χ̃)·ζ] by E[Tr C/v − T] (Stein's
  lemma on ζ) and E[χ̃·χ*] by mT, identities that hold only in expectation: at the solver's point
  ∂φ/∂m and ∂φ/∂q equal a Monte-Carlo fluctuation of the size of the standard error of the
  pathwise estimator (the one differenced here; the Stein terms fluctuate less, about a third
  of it at the cases below). These two are checked to MC_SIGMAS = 5 standard errors of the
  per-sample finite differences (plus EXACT_TOL · scale).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from hdlora import Params
from hdlora.theory import finetune, pretrain, spectral
from hdlora.theory.laws import FinetuneSamples, PretrainSamples
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.prox_finetune import finetune_prox

N_MC = 3000
SEED = 0
METHOD = "rqmc"  # the solvers' default sampling; the draws below are the solvers' own
SOLVER_TOL = 1e-10
STEP = 1e-4  # relative step of the central differences
EXACT_TOL = 1e-6  # |∂| / scale for pathwise-exact derivatives (see the module docstring)
MC_SIGMAS = 5.0  # for ∂φ/∂m, ∂φ/∂q (Stein's lemma in eqs. 70, 72)
PERTURB = 1.02  # the power check: one conjugate changed by 2 %

_POINT = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.5)
_REUSE = _POINT.replace(T=2, kappa0=0.5, alpha=0.2, reuse=True)
CASES = {
    "softmax-e0": _POINT,
    "linear-e0": _POINT.replace(activation="linear"),
    "softmax-e1": _REUSE,
    "linear-e1": _REUSE.replace(activation="linear"),
}
PRE_NAMES = ("Q", "M", "V", "Q_hat", "M_hat", "V_hat")
FT_NAMES = ("m", "q", "v", "m_hat", "q_hat", "v_hat")
STEIN = ("m", "q")


# ---------------------------------------------------------------- the paper's objects, here


def sigma(X: np.ndarray, activation: str) -> np.ndarray:
    """σ of eq. (1) on (..., T, T): row-wise softmax or x ↦ x/T."""
    if activation == "linear":
        return X / X.shape[-1]
    E = np.exp(X - X.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def symmetric(h: np.ndarray, T: int) -> np.ndarray:
    """(..., L) entries a ≤ b (row-major) → (..., T, T) symmetric matrices."""
    a, b = np.triu_indices(T)
    H = np.zeros(h.shape[:-1] + (T, T))
    H[..., a, b] = h
    H[..., b, a] = h
    return H


def one_plus_delta(T: int) -> np.ndarray:
    """1 + δ_ab for the entries a ≤ b."""
    a, b = np.triu_indices(T)
    return 1.0 + (a == b)


def fields_47(Q, M, Q0, Delta, g, zeta, T):
    """(z*, z̃) of eq. (47): z* = √(s A0) g, z̃ = √s (M/√A0 g + √B ζ), A0 = Q0 + Δ/2,
    B = Q − M²/A0 (eq. 46)."""
    s = one_plus_delta(T)
    A0 = Q0 + Delta / 2
    B = Q - M * M / A0
    assert B > 0
    return np.sqrt(s * A0) * g, np.sqrt(s) * (M / math.sqrt(A0) * g + math.sqrt(B) * zeta)


def outer(c: np.ndarray) -> np.ndarray:
    return c[:, :, None] * c[:, None, :]


class PretrainEntropy:
    """Φ of eq. (21) on the samples of ``pretrain(params, N_MC, SEED)``, split into its parts."""

    def __init__(self, params: Params, Q0: float, warm_orders):
        self.p, self.Q0 = params, Q0
        self.samples = PretrainSamples.draw(N_MC, params.T, SEED, METHOD)
        self.warm = None
        self.warm = self.channel_argmax(*warm_orders)[0]

    def channel_argmax(self, Q, M, V):
        p = self.p
        z_star, z_tilde = fields_47(Q, M, self.Q0, p.Delta, self.samples.g, self.samples.zeta, p.T)
        prox = pretrain_prox(z_star, z_tilde, V, p.T, p.activation, warm=self.warm)
        assert prox.n_failed == 0
        return prox.h, z_star, z_tilde

    def coupling(self, x):
        Q, M, V, Q_hat, M_hat, V_hat = x
        return -M * M_hat / (2 * self.p.alpha) + (Q * V_hat - V * Q_hat) / (4 * self.p.alpha)

    def input(self, x):
        Q_hat, M_hat, V_hat = x[3:]
        p = self.p
        J = spectral.J(math.sqrt(Q_hat) / M_hat, 2 * math.sqrt(p.kappa) * p.lam / M_hat, p.kappa0)
        return M_hat**2 / (4 * p.alpha * V_hat) * J[0]

    def channel(self, x):
        """max_h Ψ(h; z*, z̃) of eq. (42), per sample."""
        Q, M, V = x[:3]
        T, act = self.p.T, self.p.activation
        h, z_star, z_tilde = self.channel_argmax(Q, M, V)
        fit = ((sigma(symmetric(h, T), act) - sigma(symmetric(z_star, T), act)) ** 2).sum((1, 2))
        return -fit - ((z_tilde - h) ** 2 / (2 * V * one_plus_delta(T))).sum(axis=1)


class FinetuneEntropy:
    """φ of eq. (22) on the samples of ``finetune(params, pre, N_MC, SEED)``."""

    def __init__(self, params: Params, pre, warm_orders):
        p, T = params, params.T
        self.p = p
        self.samples = S = FinetuneSamples.draw(N_MC, T, SEED, METHOD)
        z_star, z_tilde = fields_47(pre.Q, pre.M, pre.Q0, p.Delta, S.g, S.zeta_pre, T)
        z = z_tilde  # e = 0: (z*, z) ~ 𝒬 (eq. 61)
        if p.reuse:  # e = 1: (z*, z) ~ ℛ, z = Prox(z*, z̃) of the pre-training (eqs. 41, 43)
            prox = pretrain_prox(z_star, z_tilde, pre.V, T, p.activation)
            assert prox.n_failed == 0
            z = prox.h
        self.z_star, self.z = symmetric(z_star, T), symmetric(z, T)
        self.warm = None
        self.warm = self.channel_argmax(*warm_orders)[0]

    def channel_argmax(self, m, q, v):
        S = self.samples
        chi_tilde = m * S.chi_star + math.sqrt(q - m * m) * S.zeta  # eq. (62), q0 = 1
        r = finetune_prox(
            S.chi_star, chi_tilde, self.z_star, self.z, q, v, self.p.activation, warm=self.warm
        )
        assert r.n_failed == 0
        return r.chi, chi_tilde

    def coupling(self, x):
        m, q, v, m_hat, q_hat, v_hat = x
        a = self.p.alpha_ft
        return -m * m_hat / a + (q * v_hat - v * q_hat) / (2 * a)

    def input(self, x):
        m_hat, q_hat, v_hat = x[3:]
        return (m_hat**2 + q_hat) / (2 * self.p.alpha_ft * (2 * self.p.lam_ft + v_hat))

    def channel(self, x):
        """max_χ ψ(χ; χ*, χ̃, z*, z) of eq. (63), per sample."""
        m, q, v = x[:3]
        T, act = self.p.T, self.p.activation
        chi, chi_tilde = self.channel_argmax(m, q, v)
        eye = np.eye(T)
        student = sigma(self.z + outer(chi) - q * eye, act)
        target = sigma(self.z_star + outer(self.samples.chi_star) - eye, act)
        fit = ((student - target) ** 2).sum((1, 2))
        return -fit - ((chi_tilde - chi) ** 2).sum(axis=1) / (2 * v)


# ---------------------------------------------------------------- finite differences


@dataclass
class Derivative:
    name: str
    value: float  # the partial derivative of the free entropy
    scale: float  # the largest of the parts (coupling, J/input, channel) that cancel in it
    se: float  # Monte-Carlo standard error of the channel part (0 for the conjugates)

    def __str__(self):
        return (
            f"d/d{self.name}: {self.value:+.3e} (scale {self.scale:.3e}, "
            f"relative {self.value / self.scale:+.2e}, se {self.se:.2e})"
        )


def _central(f, x, i):
    x = np.array(x, dtype=float)
    d = STEP * abs(x[i])
    xp, xm = x.copy(), x.copy()
    xp[i] += d
    xm[i] -= d
    return (np.asarray(f(xp)) - np.asarray(f(xm))) / (2 * d)


def channel_gradient(entropy, x):
    """Per-sample central differences of the channel term in the order parameters (first three
    entries of x): mean and standard error of each. It does not depend on the conjugates."""
    out = []
    for i in range(3):
        per_sample = _central(entropy.channel, x, i)
        out.append((per_sample.mean(), per_sample.std(ddof=1) / math.sqrt(len(per_sample))))
    return out


def stationarity(entropy, x, channel_grad, names) -> list[Derivative]:
    result = []
    for i, name in enumerate(names):
        parts = [_central(entropy.coupling, x, i), _central(entropy.input, x, i)]
        se = 0.0
        if i < 3:
            parts.append(channel_grad[i][0])
            se = channel_grad[i][1]
        parts = [float(v) for v in parts]
        result.append(Derivative(name, sum(parts), max(abs(v) for v in parts), se))
    return result


def violations(derivatives: list[Derivative], stein=()) -> list[Derivative]:
    bad = []
    for d in derivatives:
        tol = EXACT_TOL * d.scale + (MC_SIGMAS * d.se if d.name in stein else 0.0)
        if not abs(d.value) <= tol:
            bad.append(d)
    return bad


def report(derivatives) -> str:
    return "\n".join(str(d) for d in derivatives)


# ---------------------------------------------------------------- the solves (cached)


@functools.cache
def solved(case: str):
    p = CASES[case]
    pre = pretrain(p, n_mc=N_MC, seed=SEED, tol=SOLVER_TOL, progress=False, method=METHOD)
    ft = finetune(p, pre, n_mc=N_MC, seed=SEED, tol=SOLVER_TOL, progress=False, method=METHOD)
    assert pre.converged and ft.converged, (pre.message, ft.message)
    return p, pre, ft


@functools.cache
def pretrain_setup(case: str):
    p, pre, _ = solved(case)
    x = (pre.Q, pre.M, pre.V, pre.Q_hat, pre.M_hat, pre.V_hat)
    entropy = PretrainEntropy(p, pre.Q0, x[:3])
    return entropy, x, channel_gradient(entropy, x)


@functools.cache
def finetune_setup(case: str):
    p, pre, ft = solved(case)
    # the solver reports |m| (w → −w symmetry); m has the sign of m̂ = m/v (eq. 67)
    m = math.copysign(ft.m, ft.m_hat)
    x = (m, ft.q, ft.v, ft.m_hat, ft.q_hat, ft.v_hat)
    entropy = FinetuneEntropy(p, pre, x[:3])
    return entropy, x, channel_gradient(entropy, x)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", list(CASES))
def test_pretrain_fixed_point_is_stationary(case):
    """All six derivatives of Φ (eq. 21) vanish at the fixed point of eqs. (49)–(54)."""
    entropy, x, grad = pretrain_setup(case)
    derivatives = stationarity(entropy, x, grad, PRE_NAMES)
    assert not violations(derivatives), report(derivatives)


@pytest.mark.parametrize("case", list(CASES))
def test_finetune_fixed_point_is_stationary(case):
    """All six derivatives of φ (eq. 22) vanish at the fixed point of eqs. (67)–(72)."""
    entropy, x, grad = finetune_setup(case)
    derivatives = stationarity(entropy, x, grad, FT_NAMES)
    assert not violations(derivatives, stein=STEIN), report(derivatives)


@pytest.mark.parametrize("case", ["softmax-e0", "linear-e1"])
def test_pretrain_check_fails_with_M_hat_off_by_2_percent(case):
    """Power: the same check rejects the fixed point with M̂ × 1.02."""
    entropy, x, grad = pretrain_setup(case)
    x = list(x)
    x[4] *= PERTURB
    derivatives = stationarity(entropy, x, grad, PRE_NAMES)
    bad = violations(derivatives)
    # the M̂ balance of eq. (54) and the M balance of eq. (49) are off at the 1e-2 level
    assert {"M", "M_hat"} <= {d.name for d in bad}, report(derivatives)
    assert max(abs(d.value) / d.scale for d in bad) > 1e3 * EXACT_TOL


@pytest.mark.parametrize("case", ["softmax-e0", "linear-e1"])
def test_finetune_check_fails_with_m_hat_off_by_2_percent(case):
    """Power: the same check rejects the fixed point with m̂ × 1.02."""
    entropy, x, grad = finetune_setup(case)
    x = list(x)
    x[3] *= PERTURB
    derivatives = stationarity(entropy, x, grad, FT_NAMES)
    bad = violations(derivatives, stein=STEIN)
    assert "m_hat" in {d.name for d in bad}, report(derivatives)
    assert max(abs(d.value) / d.scale for d in bad) > 1e3 * EXACT_TOL


@pytest.mark.parametrize("case", list(CASES))
def test_the_records_free_entropies_are_eqs_21_and_22(case):
    """The free entropy a record reports (the selection between fixed points compares it) is
    the value of eq. (21) resp. (22) written here, at the record's order parameters and
    conjugates on the same samples (up to the rounding of the proximals' warm starts)."""
    p, pre, ft = solved(case)
    for setup, record in ((pretrain_setup, pre), (finetune_setup, ft)):
        entropy, x, _ = setup(case)
        phi = entropy.coupling(x) + entropy.input(x) + entropy.channel(x).mean()
        assert record.info["free_entropy"] == pytest.approx(phi, rel=1e-9, abs=1e-12)
