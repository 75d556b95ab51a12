"""Params (§2) and the sizes of eq. (7): every bound just inside and just outside, with the exact
message; the Observables record."""

import math
import re

import pytest

from hdlora import Observables, Params

# (field, value, the exact message): every bound of §2 just outside, and wrong types
BAD = [
    ("T", 1, "T must be an integer >= 2, got T=1"),
    ("T", 2.5, "T must be an integer >= 2, got T=2.5"),
    ("T", True, "T must be an integer >= 2, got T=True"),
    ("kappa0", 0.0, "kappa0 must satisfy κ0 > 0, got kappa0=0.0"),
    ("kappa0", -1.0, "kappa0 must satisfy κ0 > 0, got kappa0=-1.0"),
    ("kappa", 0.999, "kappa must satisfy κ >= 1 (paper §2), got kappa=0.999"),
    ("kappa", math.inf, "kappa must satisfy κ >= 1 (paper §2), got kappa=inf"),
    ("Delta", -1e-9, "Delta must satisfy Δ >= 0, got Delta=-1e-09"),
    ("Delta", math.nan, "Delta must satisfy Δ >= 0, got Delta=nan"),
    ("alpha", 0.0, "alpha must satisfy α > 0, got alpha=0.0"),
    ("alpha_ft", 0.0, "alpha_ft must satisfy α' > 0, got alpha_ft=0.0"),
    ("alpha_ft", -3.0, "alpha_ft must satisfy α' > 0, got alpha_ft=-3.0"),
    ("lam", 0.0, "lam must satisfy λ > 0, or math.inf for no pre-training, got lam=0.0"),
    ("lam", -1.0, "lam must satisfy λ > 0, or math.inf for no pre-training, got lam=-1.0"),
    ("lam_ft", 0.0, "lam_ft must satisfy λ' > 0, or math.inf for no LoRA, got lam_ft=0.0"),
    (
        "lam",
        "big",
        "lam must be a real number with λ > 0, or math.inf for no pre-training, got lam='big'",
    ),
    (
        "activation",
        "relu",
        "activation must be one of ('softmax', 'linear'), got activation='relu'",
    ),
    ("reuse", 1, "reuse must be a bool (the paper's e), got reuse=1"),
]


def _exactly(message):
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("name,value,message", BAD)
def test_params_rejects_bad_value_with_its_message(name, value, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        Params(**{name: value})


def test_params_accepts_the_boundaries_of_section_2():
    """T = 2, κ = 1, Δ = 0 are allowed (T ≥ 2, κ ≥ 1, Δ ≥ 0), as are tiny κ0, α, α' > 0."""
    p = Params(T=2, kappa=1.0, Delta=0.0, kappa0=1e-12, alpha=1e-12, alpha_ft=1e-12)
    assert (p.T, p.kappa, p.Delta) == (2, 1.0, 0.0)
    assert Params(T=2.0).T == 2 and isinstance(Params(T=2.0).T, int)


def test_params_accepts_infinite_regularisation_and_defaults():
    p = Params(lam=math.inf, lam_ft=math.inf)
    assert math.isinf(p.lam) and math.isinf(p.lam_ft)
    assert Params().Q0 == 2.0
    assert Params(reuse=True).e == 1 and Params().e == 0


def test_params_is_frozen_and_replace_validates():
    p = Params()
    with pytest.raises(AttributeError):
        p.T = 4
    assert p.replace(lam=0.3).lam == 0.3
    message = "lam must satisfy λ > 0, or math.inf for no pre-training, got lam=-1.0"
    with pytest.raises(ValueError, match=_exactly(message)):
        p.replace(lam=-1.0)


def test_sizes_of_eq7_and_their_boundaries():
    s = Params(kappa0=0.5, kappa=1.5, alpha=0.2, alpha_ft=3).sizes(50)
    assert (s.D, s.P0, s.P, s.N, s.N_ft) == (50, 25, 75, 500, 150)
    # the smallest sizes: D = 2 and every count equal to 1
    s = Params(kappa0=0.5, alpha=0.25, alpha_ft=0.5).sizes(2)
    assert (s.D, s.P0, s.P, s.N, s.N_ft) == (2, 1, 2, 1, 1)
    # reused sequences need N' <= N; N' = N is allowed
    s = Params(reuse=True, alpha=0.25, alpha_ft=1.0).sizes(4)
    assert s.N_ft == s.N == 4


@pytest.mark.parametrize(
    "params,D,message",
    [
        (Params(), 1, "D must be an integer >= 2, got D=1"),
        (Params(), 2.5, "D must be an integer >= 2, got D=2.5"),
        (Params(), True, "D must be an integer >= 2, got D=True"),
        (Params(kappa0=0.1), 4, "P0 = κ0 D rounds to 0 at D=4: increase D or kappa0"),
        (Params(alpha=0.01), 4, "N = α D² rounds to 0 at D=4: increase D or alpha"),
        (Params(alpha_ft=0.1), 4, "N' = α' D rounds to 0 at D=4: increase D or alpha_ft"),
        (
            Params(reuse=True, alpha=0.25, alpha_ft=1.25),
            4,
            "reuse=True needs N' <= N, but N' = α'D = 5 > N = αD² = 4 at D=4: "
            "increase D or alpha, or decrease alpha_ft",
        ),
    ],
)
def test_sizes_reject_with_their_message(params, D, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        params.sizes(D)


def test_observables_row_is_flat():
    obs = Observables(params=Params(), source="theory", test_error=0.3, n_mc=10, info={"n_iter": 4})
    row = obs.to_dict()
    assert row["lam"] == 0.1 and row["test_error"] == 0.3 and row["info_n_iter"] == 4
    assert all(not isinstance(v, dict) for v in row.values())
    with pytest.raises(ValueError, match="source"):
        Observables(params=Params(), source="guess")


def test_observables_are_built_by_keyword_and_read_in_one_line():
    with pytest.raises(TypeError):
        Observables(Params(), "theory")  # the record refuses positional fields
    obs = Observables(
        params=Params(), source="simulation", test_error=0.25, test_error_se=0.01, D=100
    )
    text = repr(obs)
    assert "\n" not in text and "D=100" in text and "E=0.25±0.01" in text
    assert "converged" in text and len(text) < 300
    with pytest.raises(ValueError, match="source"):
        Observables(params=Params(), source="sim")
