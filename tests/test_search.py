"""Basin hopping after the starts (hdlora.simulation.search): at a small D where a single
random start is trapped, the search reaches the minimum of the teacher start without using it.
The reference is independent of the search: the minimum L-BFGS finds from the ground truth."""

import pytest

from hdlora import EffectivePretraining, Params
from hdlora.simulation.finetune_only import FinetuneExperiment
from hdlora.simulation.measure import finetune_overlap
from hdlora.simulation.search import (
    HOP_STREAM,
    basin_hop,
    check_basin_hops,
    simulate_finetune_search,
)
from hdlora.simulation.starts import OVERLAP_DISAGREE, SAME_MINIMUM_RTOL, STAGE_ID

#: the case of issue 27: T = 2, α' = 2, (Q0, Q, M) = (1.5, 1, 0.9), Δ = 0.5, λ' = 0.5, D = 100
PARAMS = Params(T=2, alpha_ft=2.0, activation="softmax", Delta=0.5, lam_ft=0.5)
EFFECTIVE = EffectivePretraining(Q0=1.5, Q=1.0, M=0.9)
D, SEED = 100, 0

pytestmark = pytest.mark.filterwarnings("ignore::hdlora.diagnostics.StartsDisagreeWarning")


@pytest.fixture(scope="module")
def case():
    exp = FinetuneExperiment(PARAMS, EFFECTIVE, D, SEED, n_test=200, device="cpu")
    solver = dict(progress=False)
    teacher = exp.finetune(n_init=1, spectral_start=False, teacher_start=True, **solver)
    single = exp.finetune(n_init=1, spectral_start=False, **solver)
    return exp, teacher, single


def _hop(exp, fit, n):
    return basin_hop(
        lambda w: exp.objective(w),
        fit,
        n,
        [SEED, STAGE_ID["finetune"], HOP_STREAM],
        lambda w: finetune_overlap(w, exp.w_star),
        progress=False,
    )


def test_a_single_random_start_is_trapped(case):
    """The premise: one random start stops in a minimum well above the teacher start's."""
    exp, teacher, single = case
    assert single.converged and teacher.converged
    assert single.objective > teacher.objective + 1.0
    gap = finetune_overlap(single.x, exp.w_star) - finetune_overlap(teacher.x, exp.w_star)
    assert abs(gap) > OVERLAP_DISAGREE  # another minimum by the simulators' own criterion


def test_hopping_from_the_trapped_start_reaches_the_teacher_minimum(case):
    """20 moves from the trapped start reach the teacher start's minimum (same objective to
    1e-7, same overlap); the kept minimum is the lowest of the start and the moves (to the
    relative margin a move must beat), and every
    accepted move lowered the objective."""
    exp, teacher, single = case
    kept, hops = _hop(exp, single, 20)
    assert kept.objective <= teacher.objective * (1 + 1e-7)
    assert finetune_overlap(kept.x, exp.w_star) == pytest.approx(
        finetune_overlap(teacher.x, exp.w_star), abs=1e-4
    )
    assert kept.converged
    lowest = min([single.objective] + [h["objective"] for h in hops])
    assert lowest <= kept.objective <= lowest + SAME_MINIMUM_RTOL * abs(lowest)
    accepted = [h["objective"] for h in hops if h["accepted"]]
    assert accepted and all(
        b < a for a, b in zip([single.objective, *accepted], accepted, strict=False)
    )
    assert kept.n_evals > single.n_evals and kept.starts == single.starts


def test_no_move_returns_the_start(case):
    _, _, single = case
    exp = case[0]
    same, hops = _hop(exp, single, 0)
    assert same is single and hops == []


def test_the_default_search_reaches_it_and_says_so(case):
    """simulate_finetune_search (the default starts, then the moves) at the same case: the
    teacher minimum, recorded with its moves; the same seed gives the same numbers."""
    _, teacher, _ = case
    obs = simulate_finetune_search(PARAMS, EFFECTIVE, D, SEED, n_test=200, progress=False)
    assert obs.info["finetune_objective"] <= teacher.objective * (1 + 1e-7)
    assert obs.converged
    assert obs.info["ft_n_hops"] == 20
    assert obs.info["ft_hops_objective_drop"] >= 0
    assert all(obs.info[f"ft_start{k}_kind"] != "teacher" for k in range(obs.info["ft_n_starts"]))
    again = simulate_finetune_search(PARAMS, EFFECTIVE, D, SEED, n_test=200, progress=False)
    assert again.info["finetune_objective"] == obs.info["finetune_objective"]
    assert again.overlap == obs.overlap


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_basin_hops_is_checked(bad):
    with pytest.raises(ValueError, match="basin_hops"):
        check_basin_hops(bad)
