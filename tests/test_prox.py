import numpy as np
import pytest
from scipy.optimize import minimize

from hdlora.model.activations import softmax_rows
from hdlora.theory.prox import _softmax_terms, pretrain_prox
from hdlora.theory.symmetric import multiplicity, to_matrix

T, L = 3, 6


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    s = multiplicity(T)
    zs = rng.standard_normal((n, L)) * np.sqrt(s * 2.25)
    zt = 0.5 * zs + rng.standard_normal((n, L)) * np.sqrt(s * 0.4)
    return zs, zt


def _F(h, zs, zt, V):
    s = multiplicity(T)
    diff = softmax_rows(to_matrix(h[None], T)) - softmax_rows(to_matrix(zs[None], T))
    return float((diff**2).sum() + ((zt - h) ** 2 / (2 * V * s)).sum())


def test_softmax_derivatives_against_finite_differences():
    rng = np.random.default_rng(3)
    h = rng.standard_normal((4, L))
    Y = rng.dirichlet(np.ones(T), size=(4, T))
    f, g, H = _softmax_terms(h, Y, T)
    e = 1e-6
    for k in range(L):
        hp, hm = h.copy(), h.copy()
        hp[:, k] += e
        hm[:, k] -= e
        fp, gp, _ = _softmax_terms(hp, Y, T)
        fm, gm, _ = _softmax_terms(hm, Y, T)
        assert np.allclose((fp - fm) / (2 * e), g[:, k], atol=1e-8)
        assert np.allclose((gp - gm) / (2 * e), H[:, :, k], atol=1e-7)


@pytest.mark.parametrize("V", [0.05, 1.0, 20.0])
def test_softmax_prox_is_stationary_and_the_best_of_many_starts(V):
    zs, zt = _samples(2000, seed=1)
    r = pretrain_prox(zs, zt, V, T)
    assert r.n_failed == 0 and r.grad_max.max() <= 1e-10
    assert np.all(np.linalg.eigvalsh(r.hessian) > 0)  # a local minimum of F = −Ψ
    rng = np.random.default_rng(2)
    for i in range(8):  # a few samples against scipy from many random starts
        best = min(
            (
                minimize(
                    _F,
                    zt[i] + 3 * rng.standard_normal(L),
                    args=(zs[i], zt[i], V),
                    method="BFGS",
                    options={"gtol": 1e-10},
                )
                for _ in range(10)
            ),
            key=lambda res: res.fun,
        )
        assert r.objective[i] <= best.fun + 1e-9


def test_limits_of_section_3_1():
    zs, zt = _samples(500, seed=4)
    # V → 0: Prox = z̃ (test-like)
    r = pretrain_prox(zs, zt, 1e-7, T)
    assert np.abs(r.h - zt).max() < 1e-5
    # V → ∞: the data are fit, σ(Prox) → σ(z*) (slowly where softmax rows saturate)
    errs = []
    for V in (1e3, 1e5, 1e7):
        r = pretrain_prox(zs, zt, V, T)
        fit = softmax_rows(to_matrix(r.h, T)) - softmax_rows(to_matrix(zs, T))
        errs.append((fit**2).sum(axis=(1, 2)).mean())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-8


def _sym(h):
    """The symmetric T×T matrix with upper entries h (row-major a ≤ b)."""
    H = np.zeros((T, T))
    H[np.triu_indices(T)] = h
    return H + np.triu(H, 1).T


def _F_linear(h, zs, zt, V):
    """−Ψ of eq. (41) for σ(x) = x/T, written on the full matrices."""
    s = 1.0 + np.eye(T)[np.triu_indices(T)]
    return float((((_sym(h) - _sym(zs)) / T) ** 2).sum() + ((zt - h) ** 2 / (2 * V * s)).sum())


@pytest.mark.parametrize("V", [0.05, 0.7, 20.0])
def test_linear_prox_is_the_numerical_minimiser_and_the_exponent_is_one(V):
    """The linear proximal against scipy on −Ψ (eq. 41), and App. C's erratum: at the minimiser
    z − z* = (z̃ − z*)/(1 + 4V/T²) (exponent 1; the printed exponent 2 is wrong)."""
    zs, zt = _samples(12, seed=5)
    r = pretrain_prox(zs, zt, V, T, activation="linear")
    ref = np.array(
        [
            minimize(
                _F_linear,
                np.zeros(L),
                args=(zs[i], zt[i], V),
                method="BFGS",
                options={"gtol": 1e-12},
            ).x
            for i in range(len(zs))
        ]
    )
    assert np.abs(r.h - ref).max() < 1e-6 * (1 + np.abs(ref).max())
    assert np.allclose(
        r.objective, [_F_linear(h, a, b, V) for h, a, b in zip(ref, zs, zt, strict=True)]
    )
    ratio = (ref - zs) / (zt - zs)
    assert np.allclose(ratio, 1 / (1 + 4 * V / T**2), rtol=1e-5)
    assert not np.allclose(ratio, 1 / (1 + 4 * V / T**2) ** 2, rtol=1e-2)


def test_bad_V_is_rejected():
    zs, zt = _samples(3)
    with pytest.raises(ValueError, match="V"):
        pretrain_prox(zs, zt, 0.0, T)


def test_a_proximal_stopped_early_counts_and_reports_its_failures():
    """One Newton step leaves many samples away from stationarity: the finite-difference
    gradient of F = −Ψ (eq. 42, written out in ``_F``) at the returned h is large there, and
    each such sample is counted in ``n_failed`` and reported by a ProximalWarning; both
    proximals end the same way."""
    from hdlora.diagnostics import ProximalWarning
    from hdlora.theory.prox_finetune import finetune_prox

    V, n = 1.0, 40
    zs, zt = _samples(n, seed=3)
    with pytest.warns(ProximalWarning, match="pre-training proximal"):
        r = pretrain_prox(zs, zt, V, T, max_iter=1, tol=1e-12)
    eps, far = 1e-6, 0
    for i in range(n):
        grad = [
            (_F(r.h[i] + eps * e, zs[i], zt[i], V) - _F(r.h[i] - eps * e, zs[i], zt[i], V))
            / (2 * eps)
            for e in np.eye(L)
        ]
        far += max(abs(g) for g in grad) > 1e-4
    assert far > 0 and r.n_failed >= far
    rng = np.random.default_rng(4)
    chi_star, chi_tilde = rng.standard_normal((n, T)), rng.standard_normal((n, T))
    z_star = to_matrix(_samples(n, seed=5)[0], T)
    with pytest.warns(ProximalWarning, match="fine-tuning proximal"):
        f = finetune_prox(chi_star, chi_tilde, z_star, z_star, 0.5, 1.0, max_iter=1, tol=1e-12)
    assert f.n_failed > 0
