import math

import pytest

from hdlora import Observables, Params

BAD = [
    ("T", 1, "T"),
    ("T", 2.5, "T"),
    ("T", True, "T"),
    ("kappa0", 0.0, "kappa0"),
    ("kappa0", -1.0, "kappa0"),
    ("kappa", 0.5, "kappa"),
    ("kappa", math.inf, "kappa"),
    ("Delta", -0.1, "Delta"),
    ("Delta", math.nan, "Delta"),
    ("alpha", 0.0, "alpha"),
    ("alpha_ft", -3.0, "alpha_ft"),
    ("lam", 0.0, "lam"),
    ("lam", -1.0, "lam"),
    ("lam_ft", 0.0, "lam_ft"),
    ("lam", "big", "lam"),
    ("activation", "relu", "activation"),
    ("reuse", 1, "reuse"),
]


@pytest.mark.parametrize("name,value,needle", BAD)
def test_params_rejects_bad_value_naming_it(name, value, needle):
    with pytest.raises(ValueError) as err:
        Params(**{name: value})
    assert needle in str(err.value)
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_params_accepts_infinite_regularisation_and_defaults():
    p = Params(lam=math.inf, lam_ft=math.inf)
    assert math.isinf(p.lam) and math.isinf(p.lam_ft)
    assert Params().Q0 == 2.0
    assert Params(reuse=True).e == 1


def test_params_is_frozen_and_replace_validates():
    p = Params()
    with pytest.raises(AttributeError):
        p.T = 4
    assert p.replace(lam=0.3).lam == 0.3
    with pytest.raises(ValueError, match="lam"):
        p.replace(lam=-1.0)


def test_sizes_and_reuse_constraint():
    s = Params(kappa0=0.5, alpha=0.2, alpha_ft=3).sizes(50)
    assert (s.D, s.P0, s.P, s.N, s.N_ft) == (50, 25, 50, 500, 150)
    with pytest.raises(ValueError, match="N'"):
        Params(reuse=True, alpha=0.01, alpha_ft=3).sizes(20)  # N = 4 < N' = 60
    with pytest.raises(ValueError, match="D"):
        Params().sizes(1)


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
