"""Jobs sent to an executor: the same numbers in this process, in a process pool and on a dask
cluster (2 worker processes), rows in the order of the jobs, warnings and errors brought back."""

import warnings

import pandas as pd
import pytest

from hdlora import Params
from hdlora.harness import tables
from hdlora.harness.checkpoints import JobStore
from hdlora.harness.executors import executor_setting, map_jobs, open_executor
from hdlora.harness.run import Run
from hdlora.params import EffectivePretraining
from hdlora.simulation import simulate, simulate_finetune

#: the columns that may differ between two runs of the same job (the time it took)
TIMING = ["wall_time"]

SMOKE = dict(
    points=[Params(T=2, alpha=0.2, alpha_ft=2.0, lam=0.1, lam_ft=0.3)],
    seeds=[0, 1],
    grid={"D": [24, 32]},
)


def smoke_table(executor) -> pd.DataFrame:
    """A smoke table of pre-training + fine-tuning simulations: 1 point x 2 seeds x 2 D."""
    return tables.run_table(simulate, executor=executor, progress=False, **SMOKE)


def same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING), check_exact=True)


@pytest.fixture(scope="module")
def in_process():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smoke_table(None)


def test_a_dask_local_cluster_gives_the_in_process_table_exactly(in_process):
    pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the starts' warnings are checked below
        with open_executor("dask-local:2") as pool:
            on_cluster = smoke_table(pool)
    same_numbers(on_cluster, in_process)
    assert list(in_process["seed"]) == [0, 1, 0, 1] and list(in_process["D"]) == [24, 24, 32, 32]


@pytest.fixture(scope="module")
def pool():
    """One pool of 2 spawned worker processes for the tests of this module (each start costs
    an import of torch)."""
    with open_executor("processes:2") as executor:
        yield executor


def test_a_process_pool_gives_the_in_process_table_exactly(in_process, pool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same_numbers(smoke_table(pool), in_process)


def _warn_and_square(x):
    warnings.warn(f"job {x} warns", UserWarning, stacklevel=1)
    return x * x


def _fail_at_three(x):
    if x == 3:
        raise RuntimeError("job 3 failed")
    return x


@pytest.mark.parametrize("where", ["inprocess", "pool"])
def test_results_keep_the_order_of_the_jobs_and_bring_back_warnings(where, request):
    executor = request.getfixturevalue(where) if where == "pool" else where
    with open_executor(executor) as ex, pytest.warns(UserWarning) as caught:
        out = map_jobs(_warn_and_square, [(x,) for x in range(6)], ex)
    assert out == [x * x for x in range(6)]
    assert sorted(str(w.message) for w in caught) == [f"job {x} warns" for x in range(6)]


@pytest.mark.parametrize("where", ["inprocess", "pool"])
def test_a_failing_job_stops_the_map_with_its_error(where, request):
    executor = request.getfixturevalue(where) if where == "pool" else where
    with open_executor(executor) as ex, pytest.raises(RuntimeError, match="job 3 failed"):
        map_jobs(_fail_at_three, [(x,) for x in range(6)], ex)


@pytest.mark.parametrize("where", ["inprocess", "pool"])
def test_a_map_stopped_by_a_failing_job_keeps_the_finished_ones(where, request, tmp_path):
    """With a job store, the jobs that finished before (or beside) a failing one are kept,
    and the map run again without the failure runs only the failed job."""
    executor = request.getfixturevalue(where) if where == "pool" else where
    store = JobStore(tmp_path / "jobs")
    with open_executor(executor) as ex, pytest.raises(RuntimeError, match="job 3 failed"):
        map_jobs(_fail_at_three, [(x,) for x in range(6)], ex, store=store)
    assert 3 not in {int(p.stem) for p in store.folder.glob("*.pkl")}
    assert [store.get(i) for i in range(3)] == [(i, []) for i in range(3)]
    with open_executor(executor) as ex, pytest.warns(UserWarning, match="job 3 warns"):
        out = map_jobs(_warn_and_square, [(x,) for x in range(6)], ex, store=store)
    assert out[:4] == [0, 1, 2, 9]  # job 3 ran again, jobs 0-2 came from the store
    # a pool may have cancelled jobs 4 and 5 before they started: run now, or stored
    assert all(out[x] in (x, x * x) for x in (4, 5))


@pytest.mark.parametrize("bad", ["threads", "processes:0", "processes:two", "dask-local:-1"])
def test_a_bad_executor_setting_names_the_parameter(bad):
    with pytest.raises(ValueError, match="executor"), open_executor(bad):
        pass


def test_the_environment_names_the_executor_when_the_parameter_does_not(monkeypatch):
    monkeypatch.setenv("HDLORA_EXECUTOR", "processes:2")
    assert executor_setting(None) == "processes:2" and executor_setting("") == "processes:2"
    assert executor_setting("inprocess") == "inprocess"
    monkeypatch.delenv("HDLORA_EXECUTOR")
    assert executor_setting(None) is None


def test_a_run_caches_the_same_table_under_the_same_key_whatever_its_executor(tmp_path, pool):
    """solve_jobs through a process pool: the jobs' rows in order, each job's own columns, and
    the cache key of the in-process run (the executor is not part of what is computed)."""
    effective = EffectivePretraining(Q0=1.5, Q=1.0, M=0.8)
    point = Params(T=2, alpha_ft=2.0, lam_ft=0.3)
    jobs = [
        dict(point=point, grid={"effective": [effective], "D": [24]}, assign=dict(tag="a")),
        dict(
            point=point.replace(lam_ft=1.0),
            seeds=[0, 1],
            grid={"effective": [effective], "D": [24]},
            assign=dict(tag="b"),
        ),
    ]
    frames = {}
    for setting, executor in [("inprocess", "inprocess"), ("pool", pool)]:
        run = Run("test_executor", tmp_path / setting, "smoke", executor=executor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames[setting] = run.solve_jobs("jobs", simulate_finetune, jobs, seeds=[1])
        run.close()
    a, b = frames["inprocess"], frames["pool"]
    same_numbers(a, b)
    keys = {k: set(pd.read_csv(tmp_path / k / "data" / "jobs.csv")["cache_key"]) for k in frames}
    assert keys["inprocess"] == keys["pool"] and len(keys["pool"]) == 1
    assert list(a["tag"]) == ["a", "b", "b"] and list(a["seed"]) == [1, 0, 1]
    assert list(a["lam_ft"]) == [0.3, 1.0, 1.0]
