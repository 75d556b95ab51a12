"""The compiled damped Newton (hdlora.theory.compiled) against the numpy reference
(hdlora.theory.newton.minimize_batch): the same samples, the same starts, the same algorithm,
so the same minimisers to 1e-10 once both are converged well below that (tol = 1e-13); and whole
predictions that agree to the precision of their fixed point. The physics of the proximals
(stationarity, best of many starts, the limits of §3.1) is tested in test_prox.py and
test_theory_finetune.py on the default backend, the compiled one."""

import warnings

import numpy as np
import pytest

from hdlora import Params
from hdlora.diagnostics import ProximalWarning
from hdlora.theory import compiled, finetune, pretrain
from hdlora.theory.newton import check_backend, newton_step, use_backend
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.symmetric import multiplicity

TIGHT = 1e-13


def _pretrain_samples(T, n, seed):
    rng = np.random.default_rng(seed)
    s = multiplicity(T)
    zs = rng.standard_normal((n, len(s))) * np.sqrt(2.25 * s)
    zt = 0.5 * zs + rng.standard_normal((n, len(s))) * np.sqrt(0.6 * s)
    return zs, zt


def _finetune_samples(T, n, seed):
    rng = np.random.default_rng(seed)
    sym = lambda A: (A + np.swapaxes(A, 1, 2)) / 2  # noqa: E731
    cs, ct = rng.standard_normal((n, T)), 1.5 * rng.standard_normal((n, T))
    return cs, ct, sym(rng.standard_normal((n, T, T))), sym(rng.standard_normal((n, T, T)))


def _both(call):
    return call("numpy"), call("numba")


@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("V", [0.05, 1.0, 7.0])
def test_pretrain_prox_compiled_equals_numpy(T, V):
    zs, zt = _pretrain_samples(T, 3000, seed=T)
    a, b = _both(lambda be: pretrain_prox(zs, zt, V, T, tol=TIGHT, backend=be))
    assert np.abs(a.h - b.h).max() <= 1e-10
    assert np.abs(a.objective - b.objective).max() <= 1e-10 * (1 + np.abs(a.objective).max())
    assert np.abs(a.hessian - b.hessian).max() <= 1e-8
    assert (a.n_failed, a.n_disagree) == (b.n_failed, b.n_disagree)
    assert abs(a.n_iter - b.n_iter) <= 1


@pytest.mark.parametrize("activation", ["softmax", "linear"])
@pytest.mark.parametrize("v", [0.1, 1.0, 5.0])
def test_finetune_prox_compiled_equals_numpy(activation, v):
    cs, ct, zs, z = _finetune_samples(3, 3000, seed=7)
    a, b = _both(lambda be: finetune_prox(cs, ct, zs, z, 0.7, v, activation, tol=TIGHT, backend=be))
    assert np.abs(a.chi - b.chi).max() <= 1e-10
    assert np.abs(a.objective - b.objective).max() <= 1e-10 * (1 + np.abs(a.objective).max())
    assert np.abs(a.dq_psi - b.dq_psi).max() <= 1e-9
    # Tr C = Tr H⁻¹: relative to its size (H is nearly singular on a few samples)
    assert np.abs(a.trace_C - b.trace_C).max() <= 1e-8 * (1 + np.abs(a.trace_C).max())
    assert (a.n_failed, a.n_disagree) == (b.n_failed, b.n_disagree)


def test_warm_start_and_failures_are_the_same_in_both_backends():
    cs, ct, zs, z = _finetune_samples(2, 500, seed=3)
    warm = np.random.default_rng(9).standard_normal(ct.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProximalWarning)
        a, b = _both(
            lambda be: finetune_prox(
                cs,
                ct,
                zs,
                z,
                0.3,
                2.0,
                warm=warm,
                both_signs=False,
                max_iter=2,
                tol=1e-14,
                backend=be,
            )
        )
    assert a.n_failed == b.n_failed > 0  # two Newton steps are not enough for every sample
    assert np.abs(a.chi - b.chi).max() <= 1e-10


def test_newton_step_flips_negative_curvature_like_the_reference():
    rng = np.random.default_rng(5)
    for k in (2, 3, 6):
        for _ in range(20):
            A = rng.standard_normal((k, k))
            H = A + A.T  # indefinite in general: the eigenvalue path
            if rng.random() < 0.5:
                H = A @ A.T + 0.1 * np.eye(k)  # positive definite: the Cholesky path
            g = rng.standard_normal(k)
            step = np.empty(k)
            compiled._newton_step(k, H, g, step, np.empty((k, k)), np.empty(k))
            ref = newton_step(H[None], g[None])[0]
            assert np.allclose(step, ref, rtol=1e-9, atol=1e-12)
            assert g @ step < 0  # a descent direction either way


def test_a_whole_prediction_agrees_between_backends():
    """Pre-training and fine-tuning fixed points on the numpy reference and on the compiled
    proximal: the two differ by the solvers' rounding, far below the fixed point's tolerance."""
    p = Params(T=3, Delta=0.5, alpha=0.5, alpha_ft=2, lam=0.01, lam_ft=0.5)
    out = {}
    for backend in ("numpy", "numba"):
        with use_backend(backend):
            pre = pretrain(p, n_mc=2000, seed=1, progress=False)
            ft = finetune(p, pre, n_mc=2000, seed=1, progress=False)
        out[backend] = (pre.test_error, pre.Q, ft.ft_test_error, ft.overlap, ft.q)
    assert np.allclose(out["numpy"], out["numba"], rtol=1e-8, atol=0)


def test_backend_is_checked_and_the_default_restored():
    assert check_backend(None) == "numba"
    with use_backend("numpy"):
        assert check_backend(None) == "numpy"
    assert check_backend(None) == "numba"
    with pytest.raises(ValueError, match="backend must be one of"):
        check_backend("fortran")
    with pytest.raises(ValueError, match="backend"):
        pretrain_prox(*_pretrain_samples(2, 4, 0), 1.0, 2, backend="cuda")


def test_a_start_of_the_wrong_width_is_refused():
    """The kernel is compiled for k = T(T+1)/2 (pre-training) or T (fine-tuning) variables: a
    start of another width is an error naming the expected shape, not a read past the arrays."""
    T, n = 3, 4
    data = {"Y": np.zeros((n, T, T)), "x_tilde": np.zeros((n, T)), "pen": np.ones(T)}
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 6\)"):
        compiled.minimize_batch(compiled.PRETRAIN, np.zeros((n, T)), data, 1e-10, 10)
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 3\)"):
        compiled.minimize_batch(compiled.FINETUNE_SOFTMAX, np.zeros((n, 6)), data, 1e-10, 10)
