"""Property-based tests (hypothesis): invariants that must hold for every input, not only at the
points the other tests pick.

- ``Params``: valid records round-trip through ``to_dict``; every out-of-range value is refused
  with an error that names the field; the finite-D sizes of eq. (7) are the nearest integers.
- The symmetric coordinates (entries a ≤ b): the matrix is symmetric, holds the entries, and
  its Frobenius norm counts each off-diagonal entry twice.
- The proximals of eqs. (41) and (64): stationary (a finite-difference gradient of the
  objective written here from the equation), a local minimum, equivariant under a permutation of
  the tokens, and odd under the sign symmetries of the objective.
- The agreement check fails closed: an empty table, a NaN anywhere, or a spread of zero never
  passes.

Examples are drawn with a fixed seed (``derandomize``): same code, same examples.
"""

import functools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdlora import Params
from hdlora.harness.agreement import agreement_table, check_agreement
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.symmetric import multiplicity, n_entries, to_matrix, upper_indices

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)

positive = st.floats(1e-3, 50, allow_nan=False)
valid_params = st.builds(
    Params,
    T=st.integers(2, 8),
    kappa0=positive,
    kappa=st.floats(1, 50),
    Delta=st.floats(0, 10),
    alpha=positive,
    alpha_ft=positive,
    lam=positive | st.just(math.inf),
    lam_ft=positive | st.just(math.inf),
    activation=st.sampled_from(["softmax", "linear"]),
    reuse=st.booleans(),
)

# out-of-range values of each field (eq. 7 and §2: κ ≥ 1, Δ ≥ 0, the rest > 0)
BAD = {
    "T": st.sampled_from([1, 0, -3, 2.5, True]),
    "kappa0": st.sampled_from([0.0, -1.0, math.nan, math.inf]),
    "kappa": st.sampled_from([0.99, 0.0, math.nan, math.inf]),
    "Delta": st.sampled_from([-1e-9, math.nan, math.inf]),
    "alpha": st.sampled_from([0.0, -0.1, math.nan, math.inf]),
    "alpha_ft": st.sampled_from([0.0, -2.0, math.nan, math.inf]),
    "lam": st.sampled_from([0.0, -1.0, math.nan]),
    "lam_ft": st.sampled_from([0.0, -1.0, math.nan]),
    "activation": st.sampled_from(["relu", "", "Softmax"]),
    "reuse": st.sampled_from([0, 1, "yes"]),
}


@SETTINGS
@given(valid_params)
def test_params_round_trip(p):
    assert Params(**p.to_dict()) == p
    assert p.replace() == p


@SETTINGS
@given(st.data())
def test_params_refuse_out_of_range_values_by_name(data):
    name = data.draw(st.sampled_from(sorted(BAD)))
    value = data.draw(BAD[name])
    with pytest.raises(ValueError, match=name):
        Params(**{name: value})


@SETTINGS
@given(valid_params, st.integers(2, 400))
def test_sizes_are_the_nearest_integers_or_an_error_naming_the_cause(p, D):
    """P0 = κ0 D, P = κ D, N = α D², N' = α' D rounded to the nearest integer (eq. 7)."""
    try:
        s = p.sizes(D)
    except ValueError as err:
        assert any(n in str(err) for n in ("kappa0", "alpha", "alpha_ft", "reuse", "alpha_ft"))
        return
    for size, exact in ((s.P0, p.kappa0 * D), (s.P, p.kappa * D), (s.N, p.alpha * D * D)):
        assert size >= 1 and abs(size - exact) <= 0.5
    assert s.N_ft >= 1 and abs(s.N_ft - p.alpha_ft * D) <= 0.5
    assert not p.reuse or s.N_ft <= s.N


@SETTINGS
@given(st.integers(2, 7), st.integers(0, 2**31))
def test_symmetric_coordinates(T, seed):
    h = np.random.default_rng(seed).standard_normal((3, n_entries(T)))
    H = to_matrix(h, T)
    a, b = upper_indices(T)
    assert np.array_equal(H, np.swapaxes(H, -1, -2))
    assert np.array_equal(H[:, a, b], h)
    off = a != b
    frob = (h[:, ~off] ** 2).sum(-1) + 2 * (h[:, off] ** 2).sum(-1)
    np.testing.assert_allclose((H * H).sum(axis=(-1, -2)), frob, rtol=1e-12)
    assert np.array_equal(multiplicity(T), 1.0 + (a == b))


# ----------------------------------------------------------------------------- proximals
def _softmax(Z):
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def _pretrain_F(h, z_star, z_tilde, V, T):
    """−Ψ of eq. (41) for the row-wise softmax, on the entries a ≤ b of one sample."""
    s = multiplicity(T)
    fit = ((_softmax(to_matrix(h, T)) - _softmax(to_matrix(z_star, T))) ** 2).sum()
    return fit + ((z_tilde - h) ** 2 / (2 * V * s)).sum()


def _finetune_F(chi, chi_star, chi_tilde, z_star, z, q, v):
    """−ψ of eq. (64) (q0 = 1) for the row-wise softmax, one sample."""
    T = len(chi)
    eye = np.eye(T)
    Y = _softmax(z_star + np.outer(chi_star, chi_star) - eye)
    fit = ((_softmax(z + np.outer(chi, chi) - q * eye) - Y) ** 2).sum()
    return fit + ((chi_tilde - chi) ** 2).sum() / (2 * v)


def _gradient(f, x, e=1e-6):
    return np.array([(f(x + e * u) - f(x - e * u)) / (2 * e) for u in np.eye(len(x))])


def _permute_entries(h, T, perm):
    """The entries a ≤ b of P H Pᵀ, P the permutation matrix of ``perm``."""
    a, b = upper_indices(T)
    return to_matrix(h, T)[..., perm, :][..., :, perm][..., a, b]


def _symmetric_fields(rng, n, T, scale):
    Z = rng.standard_normal((n, T, T)) * scale
    return (Z + np.swapaxes(Z, -1, -2)) / 2


@SETTINGS
@given(st.integers(2, 4), st.floats(0.05, 5.0), st.floats(0.3, 3.0), st.integers(0, 2**31))
def test_pretrain_prox_is_a_stationary_local_minimum_and_permutation_equivariant(T, V, scale, seed):
    rng = np.random.default_rng(seed)
    L = n_entries(T)
    z_star, z_tilde = rng.standard_normal((2, 3, L)) * scale
    r = pretrain_prox(z_star, z_tilde, V, T, "softmax")
    for i in range(3):
        F = functools.partial(_pretrain_F, z_star=z_star[i], z_tilde=z_tilde[i], V=V, T=T)
        h = r.h[i]
        assert np.abs(_gradient(F, h)).max() < 1e-5 * max(1.0, 1 / V)
        assert r.objective[i] == pytest.approx(F(h), rel=1e-10, abs=1e-12)
        for u in rng.standard_normal((8, L)):
            assert F(h + 1e-3 * u) >= F(h) - 1e-12
    perm = rng.permutation(T)
    rp = pretrain_prox(
        _permute_entries(z_star, T, perm), _permute_entries(z_tilde, T, perm), V, T, "softmax"
    )
    np.testing.assert_allclose(rp.objective, r.objective, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rp.h, _permute_entries(r.h, T, perm), atol=1e-6)


@SETTINGS
@given(st.integers(2, 4), st.floats(0.05, 5.0), st.integers(0, 2**31))
def test_linear_pretrain_prox_is_odd(T, V, seed):
    """σ(x) = x/T: Ψ(−h; −z*, −z̃) = Ψ(h; z*, z̃), so Prox is odd."""
    z_star, z_tilde = np.random.default_rng(seed).standard_normal((2, 4, n_entries(T)))
    plus = pretrain_prox(z_star, z_tilde, V, T, "linear")
    minus = pretrain_prox(-z_star, -z_tilde, V, T, "linear")
    np.testing.assert_allclose(minus.h, -plus.h, rtol=1e-12, atol=1e-14)


@SETTINGS
@given(
    st.integers(2, 4),
    st.floats(0.05, 5.0),
    st.floats(0.0, 2.0),
    st.integers(0, 2**31),
)
def test_finetune_prox_stationary_and_symmetric(T, v, q, seed):
    """prox of eq. (64): stationary and a local minimum of −ψ; ψ depends on χ through χχᵀ and
    (χ̃ − χ)², and on χ* through χ*χ*ᵀ, so prox(χ*, −χ̃) = −prox(χ*, χ̃), prox(−χ*, χ̃) =
    prox(χ*, χ̃); and it is equivariant under a permutation of the tokens."""
    rng = np.random.default_rng(seed)
    n = 3
    chi_star, chi_tilde = rng.standard_normal((2, n, T))
    z_star, z = _symmetric_fields(rng, n, T, 1.0), _symmetric_fields(rng, n, T, 1.0)
    r = finetune_prox(chi_star, chi_tilde, z_star, z, q, v)
    for i in range(n):
        F = functools.partial(
            _finetune_F,
            chi_star=chi_star[i],
            chi_tilde=chi_tilde[i],
            z_star=z_star[i],
            z=z[i],
            q=q,
            v=v,
        )
        assert np.abs(_gradient(F, r.chi[i])).max() < 1e-5 * max(1.0, 1 / v)
        assert r.objective[i] == pytest.approx(F(r.chi[i]), rel=1e-10, abs=1e-12)
        for u in rng.standard_normal((8, T)):
            assert F(r.chi[i] + 1e-3 * u) >= F(r.chi[i]) - 1e-12
    flipped = finetune_prox(chi_star, -chi_tilde, z_star, z, q, v)
    np.testing.assert_allclose(flipped.objective, r.objective, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(flipped.chi, -r.chi, atol=1e-6)
    teacher_flipped = finetune_prox(-chi_star, chi_tilde, z_star, z, q, v)
    np.testing.assert_allclose(teacher_flipped.chi, r.chi, atol=1e-10)
    perm = rng.permutation(T)
    permuted = finetune_prox(
        chi_star[:, perm],
        chi_tilde[:, perm],
        z_star[:, perm][:, :, perm],
        z[:, perm][:, :, perm],
        q,
        v,
    )
    np.testing.assert_allclose(permuted.objective, r.objective, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(permuted.chi, r.chi[:, perm], atol=1e-6)


# ----------------------------------------------------------------------------- agreement
def _runs(rng, n_points, n_seeds, Ds=(40, 80)):
    rows = [
        {"lam": 0.1 * (i + 1), "D": D, "seed": s, "err": 0.5 + 0.05 * rng.standard_normal()}
        for i in range(n_points)
        for D in Ds
        for s in range(n_seeds)
    ]
    theory = pd.DataFrame({"lam": [0.1 * (i + 1) for i in range(n_points)], "err": 0.5})
    return pd.DataFrame(rows), theory.assign(err_se=0.0)


def test_agreement_check_of_an_empty_table_fails():
    check = check_agreement(pd.DataFrame())
    assert not check.passed and check.n_compared == 0
    sim, theory = _runs(np.random.default_rng(0), 2, 3)
    with pytest.raises(ValueError, match="sim"):
        agreement_table(sim.iloc[:0], theory, ["lam"], ["err"])
    with pytest.raises(ValueError, match="err"):
        agreement_table(sim.drop(columns="err"), theory, ["lam"], ["err"])


@SETTINGS
@given(st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**31), st.data())
def test_agreement_check_fails_closed_on_a_nan(n_points, n_seeds, seed, data):
    sim, theory = _runs(np.random.default_rng(seed), n_points, n_seeds)
    where = data.draw(st.sampled_from(["sim", "theory", "theory_se"]))
    if where == "sim":
        sim.loc[data.draw(st.integers(0, len(sim) - 1)), "err"] = math.nan
    else:
        col = "err" if where == "theory" else "err_se"
        theory.loc[data.draw(st.integers(0, len(theory) - 1)), col] = math.nan
    assert not check_agreement(agreement_table(sim, theory, ["lam"], ["err"])).passed


@SETTINGS
@given(
    st.integers(1, 5),
    st.integers(1, 6),
    st.floats(0.01, 0.5),
    st.floats(1e-3, 1.0),
    st.sampled_from([(40,), (40, 80)]),
)
def test_agreement_check_fails_closed_without_a_spread(n_points, n_seeds, offset, theory_se, Ds):
    """Identical runs (or a single one) have no standard error, at one D or extrapolated over
    two: a deviation cannot pass, even where the theory's own standard error alone would make
    it look small."""
    sim, theory = _runs(np.random.default_rng(0), n_points, n_seeds, Ds)
    sim, theory = sim.assign(err=0.5 + offset), theory.assign(err_se=theory_se)
    assert not check_agreement(agreement_table(sim, theory, ["lam"], ["err"])).passed
