"""The harness: caches keyed by what produced them, atomic writes that leave unchanged files
alone, output folders that keep papermill runs out of the tracked data/, and run_table's one
call shape for every solver."""

import json
import math
import os

import pandas as pd
import pytest

from hdlora import Observables, Params
from hdlora.harness import io, tables
from hdlora.harness.run import Run


def fake_solver(params, seed=0, progress=None, scale=1.0):
    """A solver with the common call shape: ``solver(params, seed=…, progress=…, **kwargs)``."""
    return Observables(
        params=params, source="theory", test_error=scale * params.lam + seed, n_mc=10, seed=seed
    )


def test_cache_key_changes_with_points_arguments_and_code():
    p = Params()
    k = tables.cache_key(solver=fake_solver, points=[p], kwargs={"n_mc": 10})
    assert k == tables.cache_key(solver=fake_solver, points=[p], kwargs={"n_mc": 10})
    assert k != tables.cache_key(
        solver=fake_solver, points=[p.replace(lam=0.2)], kwargs={"n_mc": 10}
    )
    assert k != tables.cache_key(solver=fake_solver, points=[p], kwargs={"n_mc": 11})
    assert k != tables.cache_key(solver=fake_solver, points=[p.replace(lam=math.inf)], kwargs={})


def test_code_version_follows_code_not_prose(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg_hd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text('"""Doc."""\n\ndef f(x):\n    # a comment\n    return x + 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    v1 = tables.code_version("fakepkg_hd.m")
    (pkg / "m.py").write_text('"""Other doc."""\n\ndef f(x):\n    return x + 1  # moved\n')
    assert tables.code_version("fakepkg_hd.m") == v1  # read once per process (snapshot)
    tables._imports.cache_clear()
    tables._normalised_source.cache_clear()
    assert tables.code_version("fakepkg_hd.m") == v1  # docstrings and comments do not count
    (pkg / "m.py").write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    tables._normalised_source.cache_clear()
    assert tables.code_version("fakepkg_hd.m") != v1


def test_code_version_follows_imported_library_modules():
    closure = tables.module_closure("hdlora.theory.two_stage")
    assert "hdlora.theory.prox_finetune" in closure and "hdlora.theory.spectral" in closure
    assert not any(m.startswith("hdlora.simulation") for m in closure)


def test_cached_recomputes_when_the_key_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [len(calls)]})

    path = tmp_path / "t.csv"
    a = tables.cached(path, "key1", compute)
    b = tables.cached(path, "key1", compute)
    assert len(calls) == 1 and a.equals(b)
    c = tables.cached(path, "key2", compute)  # a stale table is never reused
    assert len(calls) == 2 and int(c["x"].iloc[0]) == 2
    tables.cached(path, "key2", compute, recompute=True)
    assert len(calls) == 3


def test_a_recomputation_that_reproduces_the_numbers_rewrites_nothing(tmp_path):
    path = tmp_path / "t.csv"
    first = pd.DataFrame({"E": [0.25, 0.5], "wall_time": [1.0, 2.0], "n_iter": [10, 11]})
    tables.cached(path, "k", lambda: first)
    before = path.read_bytes()
    again = first.assign(E=first["E"] * (1 + 1e-9), wall_time=[3.0, 4.0], n_iter=[12, 13])
    df = tables.cached(path, "k", lambda: again, recompute=True)
    assert path.read_bytes() == before  # another machine's times and optimiser path: no change
    assert df["wall_time"].tolist() == [1.0, 2.0]  # and the table returned is the file's
    moved = first.assign(E=first["E"] * (1 + 1e-5))
    df = tables.cached(path, "k", lambda: moved, recompute=True)
    assert path.read_bytes() != before and df["E"].iloc[0] == pytest.approx(0.25 * (1 + 1e-5))


def test_cached_reads_a_committed_table_with_the_same_key(tmp_path):
    committed, out = tmp_path / "committed", tmp_path / "out"
    committed.mkdir()
    pd.DataFrame({"x": [7], "cache_key": ["k"]}).to_csv(committed / "t.csv", index=False)
    df = tables.cached(out / "t.csv", "k", lambda: pytest.fail("recomputed"), also_from=[committed])
    assert int(df["x"].iloc[0]) == 7 and (out / "t.csv").exists()


def test_writes_are_atomic_and_skip_unchanged_bytes(tmp_path):
    path = tmp_path / "a.csv"
    io.write_table(pd.DataFrame({"x": [1]}), path)
    os.utime(path, (0, 0))
    io.write_table(pd.DataFrame({"x": [1]}), path)
    assert os.stat(path).st_mtime == 0  # unchanged: not rewritten
    io.write_table(pd.DataFrame({"x": [2]}), path)
    assert pd.read_csv(path)["x"].iloc[0] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_default_output_folder_is_under_build(tmp_path):
    root = io.repo_root()
    assert io.resolve_out_dir(None, "nb") == root / "build" / "runs" / "nb"
    assert io.resolve_out_dir(tmp_path, "nb") == tmp_path
    run = Run("nb", tmp_path / "o", "smoke")
    assert run.data_dir == tmp_path / "o" / "data" and run.fig_dir.exists()
    assert (
        run.choose(None, smoke=1, quick=2, paper=3) == 1
        and run.choose(5, smoke=1, quick=2, paper=3) == 5
    )
    with pytest.raises(ValueError, match="profile"):
        Run("nb", tmp_path, "fast")


def test_run_table_accepts_any_solver_with_the_common_shape(tmp_path):
    points = [Params(lam=0.1), Params(lam=0.2)]
    df = tables.run_table(
        fake_solver, points, seeds=[0, 1], grid={"scale": [1.0, 2.0]}, progress=False
    )
    assert len(df) == 8 and set(df["seed"]) == {0, 1}
    assert df["test_error"].tolist()[:2] == [0.1, 1.1]
    run = Run("nb", tmp_path, "smoke")
    t1 = run.solve("tab", fake_solver, points, seeds=[0])
    t2 = run.solve("tab", fake_solver, points, seeds=[0])
    assert t1.equals(t2) and t1["cache_key"].nunique() == 1
    t3 = run.solve("tab", fake_solver, points, seeds=[0], scale=3.0)
    assert t3["cache_key"].iloc[0] != t1["cache_key"].iloc[0]
    assert t3["test_error"].tolist() == pytest.approx([0.3, 0.6])


def test_with_replicon_flags_the_points_whose_replicon_is_at_least_one():
    from hdlora.harness.agreement import with_replicon

    agreement = pd.DataFrame(
        {"lam": [0.1, 0.1, 1.0, 1.0], "observable": ["a", "b", "a", "b"], "z": [0.0] * 4}
    )
    theory = pd.DataFrame(
        {
            "lam": [0.1, 1.0],
            "replicon_stable": [True, True],
            "ft_replicon_stable": [True, False],
            "ft_replicon": [0.5, 1.2],
        }
    )
    out = with_replicon(agreement, theory, ["lam"])
    assert out["replicon_stable"].tolist() == [True, True, False, False]
    assert out["ft_replicon"].tolist() == [0.5, 0.5, 1.2, 1.2]
    pre_unstable = theory.assign(replicon_stable=[False, True], ft_replicon_stable=[True, True])
    assert with_replicon(agreement, pre_unstable, ["lam"])["replicon_stable"].tolist() == [
        False,
        False,
        True,
        True,
    ]


def test_a_table_is_rewritten_only_beyond_the_stated_tolerance(tmp_path):
    path = tmp_path / "t.csv"
    x = [1.0, 2e-12, math.nan, math.inf]
    io.write_table(pd.DataFrame({"x": x, "s": list("abcd")}), path)
    os.utime(path, (0, 0))
    noise = [1.0 + 3e-10, 2e-12 * (1 + 1e-10), math.nan, math.inf]  # rounding noise
    io.write_table(pd.DataFrame({"x": noise, "s": list("abcd")}), path)
    assert os.stat(path).st_mtime == 0 and pd.read_csv(path)["x"].iloc[0] == 1.0
    for changed in (
        pd.DataFrame({"x": [1.0 + 3e-9, *x[1:]], "s": list("abcd")}),  # beyond 1e-9
        pd.DataFrame({"x": x, "s": list("abce")}),  # a text cell
        pd.DataFrame({"x": x, "t": list("abcd")}),  # a column name
        pd.DataFrame({"x": x[:3], "s": list("abc")}),  # the shape
        pd.DataFrame({"x": [1.0, 3e-12, math.nan, math.inf], "s": list("abcd")}),  # a small number
    ):
        os.utime(path, (0, 0))
        io.write_table(changed, path)
        assert os.stat(path).st_mtime != 0, changed
        assert io.same_table(pd.read_csv(path), changed)
    # a quantity known to sit at rounding level is compared with an absolute tolerance
    io.write_table(pd.DataFrame({"g": [1e-13]}), path)
    os.utime(path, (0, 0))
    io.write_table(pd.DataFrame({"g": [3e-13]}), path, atol=1e-11)
    assert os.stat(path).st_mtime == 0
    # the optimiser's path is not a result: a table that differs only there is kept
    sim = pd.DataFrame({"overlap": [0.9], "n_iter": [154], "info_ft_start0_grad_max": [8e-7]})
    io.write_table(sim, path)
    os.utime(path, (0, 0))
    path_only = sim.assign(n_iter=155, info_ft_start0_grad_max=9e-7)
    io.write_table(path_only, path, rtol=io.SIMULATION_RTOL, ignore=io.OPTIMISER_DIAGNOSTICS)
    assert os.stat(path).st_mtime == 0
    io.write_table(path_only, path, rtol=io.SIMULATION_RTOL)  # compared when not ignored
    assert os.stat(path).st_mtime != 0
    os.utime(path, (0, 0))
    moved = path_only.assign(overlap=0.9 * (1 + 2e-6))
    io.write_table(moved, path, rtol=io.SIMULATION_RTOL, ignore=io.OPTIMISER_DIAGNOSTICS)
    assert os.stat(path).st_mtime != 0


def test_numbers_in_a_text_column_are_compared_as_numbers(tmp_path):
    """A readings table holds numbers among words in one column: a number there moved by
    rounding noise (the digits a fresh clone's run changes) rewrites nothing; one moved beyond
    the tolerance, or a word, does."""
    path = tmp_path / "r.csv"
    cells = ["holds", "1.3180175014125775", "0.00041056680412812060"]
    io.write_table(pd.DataFrame({"v": cells}), path)
    os.utime(path, (0, 0))
    noise = ["holds", "1.3180175014125868", "0.00041056680412812093"]
    io.write_table(pd.DataFrame({"v": noise}), path)
    assert os.stat(path).st_mtime == 0
    for changed in (["holds", "1.3180175", cells[2]], ["fails", *cells[1:]]):
        io.write_table(pd.DataFrame({"v": changed}), path)
        assert os.stat(path).st_mtime != 0, changed
        os.utime(path, (0, 0))


def test_a_figure_is_rewritten_only_when_its_picture_changes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(y):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1, 2], y)
        return fig

    stem = tmp_path / "f"
    io.save_figure(draw([0, 1, 0]), stem)
    for ext in ("pdf", "png"):
        os.utime(stem.with_suffix(f".{ext}"), (0, 0))
    io.save_figure(draw([0, 1 + 1e-12, 0]), stem)  # the same picture: both files kept
    assert all(os.stat(stem.with_suffix(f".{e}")).st_mtime == 0 for e in ("pdf", "png"))
    io.save_figure(draw([0, 1, 1]), stem)  # another picture: both rewritten
    assert all(os.stat(stem.with_suffix(f".{e}")).st_mtime != 0 for e in ("pdf", "png"))
    plt.close("all")


def _fake_module(tmp_path, monkeypatch, body):
    pkg = tmp_path / "fakepkg_stale"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "solver.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    tables._imports.cache_clear()
    tables._normalised_source.cache_clear()
    import importlib
    import sys

    sys.modules.pop("fakepkg_stale.solver", None)
    return importlib.import_module("fakepkg_stale.solver")


def test_stale_tables_finds_a_table_whose_code_changed_without_recomputing(tmp_path, monkeypatch):
    body = (
        "from hdlora import Observables\n\n"
        "def solve(params, seed=0, progress=None):\n"
        "    return Observables(params=params, source='theory', test_error=params.lam, seed=seed)\n"
    )
    module = _fake_module(tmp_path, monkeypatch, body)
    run = Run("nb", tmp_path / "out", "smoke")
    run.solve("tab", module.solve, [Params(lam=0.1)])
    run.table("other", lambda: pd.DataFrame({"x": [1]}), code=tables.code_version(module.solve))
    run.write(pd.DataFrame({"y": [1]}), "uncached")  # no key: not a cached table
    data = run.data_dir
    assert (data / "provenance" / "tab.json").exists()
    assert tables.stale_tables(data) == {}
    # a planted change of the solver's code: both tables that name it are stale, nothing reruns
    _fake_module(tmp_path, monkeypatch, body.replace("test_error=params.lam", "test_error=2"))
    stale = tables.stale_tables(data)
    assert set(stale) == {"tab.csv", "other.csv"} and "fakepkg_stale.solver" in stale["tab.csv"]
    # recomputed with the new code (as `make figures` would): current again
    module = importlib_reload("fakepkg_stale.solver")
    run.solve("tab", module.solve, [Params(lam=0.1)])
    run.table("other", lambda: pd.DataFrame({"x": [1]}), code=tables.code_version(module.solve))
    assert tables.stale_tables(data) == {}
    # a table derived from cached ones (their keys in its cache_key column) is current with them
    joined = pd.concat([pd.read_csv(data / "tab.csv"), pd.read_csv(data / "other.csv")])
    run.write(joined, "joined")
    assert tables.stale_tables(data) == {}
    # a table whose key was edited by hand, and a derived table whose source went, are reported
    df = pd.read_csv(data / "tab.csv").assign(cache_key="0123456789abcdef")
    df.to_csv(data / "tab.csv", index=False)
    (data / "provenance" / "other.json").unlink()
    (data / "other.csv").unlink()
    stale = tables.stale_tables(data)
    assert set(stale) == {"tab.csv", "joined.csv"} and "differs" in stale["tab.csv"]


def importlib_reload(name):
    import importlib
    import sys

    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_shared_sizes_come_from_one_table(tmp_path):
    """A notebook names a shared setting; its value per profile is the one of SIZES, a value
    given by papermill wins, and an unknown name is refused by name."""
    from hdlora.harness.profiles import SIZES

    for profile in ("smoke", "quick", "paper"):
        run = Run("test", out_dir=tmp_path, profile=profile)
        assert run.size("n_mc") == SIZES["n_mc"][profile]
        assert run.size("n_mc", 77) == 77
        seeds = run.size("sim_seeds")
        seeds.append(-1)  # a copy: the table is not changed by a notebook
        assert -1 not in SIZES["sim_seeds"][profile]
    with pytest.raises(ValueError, match="name must be one of"):
        run.size("n_mcc")


def test_solve_jobs_keys_the_table_by_its_own_arguments(tmp_path):
    """``run.solve_jobs`` runs each job with the common arguments (a job's own value wins),
    adds its ``assign`` columns, reuses the table for the same call and recomputes it when a
    job's argument changes: the key is the call itself, not a second list of its arguments."""
    from hdlora.theory import bayes_optimal

    calls = []

    def solver(point, seed=0, progress=False, *, scale=1.0, shift=0.0):
        calls.append((point.alpha, seed, scale, shift))
        return Observables(params=point, source="bayes", test_error=scale * point.alpha + shift)

    solver.__module__ = bayes_optimal.__module__  # a library module to take the code version of
    run = Run("test", out_dir=tmp_path, profile="smoke")
    p = Params(alpha=0.2)
    jobs = [dict(point=p, assign={"tag": "a"}), dict(point=p.replace(alpha=0.4), shift=1.0)]
    df = run.solve_jobs("jobs", solver, jobs, seeds=[0, 1], scale=2.0)
    assert calls == [(0.2, 0, 2.0, 0.0), (0.2, 1, 2.0, 0.0), (0.4, 0, 2.0, 1.0), (0.4, 1, 2.0, 1.0)]
    assert list(df["test_error"]) == pytest.approx([0.4, 0.4, 1.8, 1.8])
    assert list(df["tag"].fillna("")) == ["a", "a", "", ""]
    run.solve_jobs("jobs", solver, jobs, seeds=[0, 1], scale=2.0)
    assert len(calls) == 4  # the same call: reused
    jobs[1]["shift"] = 2.0
    run.solve_jobs("jobs", solver, jobs, seeds=[0, 1], scale=2.0)
    assert len(calls) == 8  # a job changed: the table is recomputed


def test_calls_keys_a_solvers_frames_by_the_calls(tmp_path):
    """``run.calls`` concatenates the frames of ``solver(**common, **call)`` (a call's own value
    wins, its ``assign`` columns added), reuses the table for the same calls, recomputes it when
    an argument changes, and keeps ``progress`` out of the key."""
    from hdlora.theory import sweep

    seen = []

    def solver(params, *, lam, beta=1.0, progress=None):
        seen.append((params.alpha, tuple(lam), beta))
        return pd.DataFrame({"alpha": params.alpha, "lam": lam, "beta": beta})

    solver.__module__ = sweep.__module__  # a library module to take the code version of
    run = Run("test", out_dir=tmp_path, profile="smoke")
    calls = [dict(params=Params(alpha=0.2)), dict(lam=[0.3], assign={"beta_scale": math.nan})]
    df = run.calls("frames", solver, calls, params=Params(alpha=0.4), lam=[0.1, 0.2])
    assert seen == [(0.2, (0.1, 0.2), 1.0), (0.4, (0.3,), 1.0)]
    assert list(df["alpha"]) == [0.2, 0.2, 0.4] and list(df["lam"]) == [0.1, 0.2, 0.3]
    assert df["beta_scale"].isna().all()
    run.calls("frames", solver, calls, params=Params(alpha=0.4), lam=[0.1, 0.2], progress=True)
    assert len(seen) == 2  # the same calls (progress aside): reused
    calls[0]["beta"] = 2.0
    run.calls("frames", solver, calls, params=Params(alpha=0.4), lam=[0.1, 0.2])
    assert len(seen) == 4 and seen[2][2] == 2.0  # a call changed: recomputed


def test_compare_requires_agreement_except_at_smoke(tmp_path):
    """run.compare writes the agreement table and stops a quick run whose theory is 20 % off
    at a replicon-stable point; a smoke run (too few runs for power) only reports it."""
    import numpy as np

    rng = np.random.default_rng(1)
    sim = pd.DataFrame(
        [
            {"lam": lam, "seed": s, "D": D, "err": lam + 0.002 * rng.standard_normal()}
            for lam in (0.5, 1.0)
            for s in range(4)
            for D in (50, 100)
        ]
    )
    theory = pd.DataFrame(
        {
            "lam": [0.5, 1.0],
            "err": [0.5, 1.0],
            "err_se": [1e-4, 1e-4],
            "replicon_stable": [True, True],
        }
    )
    run = Run("t", tmp_path, "quick")
    table, check, _ = run.compare("t_agreement", sim, theory, ["lam"], ["err"])
    assert check.passed and (tmp_path / "data" / "t_agreement.csv").exists()
    wrong = theory.assign(err=theory["err"] * 1.2)
    with pytest.raises(AssertionError, match="t_agreement"):
        run.compare("t_agreement", sim, wrong, ["lam"], ["err"])
    _, check, _ = Run("t", tmp_path, "smoke").compare("t_agreement", sim, wrong, ["lam"], ["err"])
    assert not check.passed


def test_a_run_refuses_to_write_over_its_own_cache(tmp_path):
    """A table written under the name of a cached one would replace the cache, and every later
    run would recompute it (with other rounding: a fresh clone's `git status` not clean)."""
    run = Run("t", tmp_path, "quick")
    run.table("t_cache", lambda: pd.DataFrame({"x": [1.0]}), what="x")
    with pytest.raises(ValueError, match="t_cache"):
        run.write(pd.DataFrame({"y": [2.0]}), "t_cache")
    run.write(pd.DataFrame({"y": [2.0]}), "t_summary")


def _stoppable_solver(calls: list, stop_at: set):
    """A solver of a library module's code version that records its calls, warns at seed 0 and
    fails at the seeds of ``stop_at`` (a computation stopped half-way)."""
    from hdlora.theory import bayes_optimal

    def solver(point, seed=0, progress=False, *, scale=1.0):
        calls.append(seed)
        if seed in stop_at:
            raise KeyboardInterrupt(f"stopped at seed {seed}")
        if seed == 0:
            import warnings

            warnings.warn("seed 0 warns", UserWarning, stacklevel=1)
        return Observables(params=point, source="bayes", test_error=scale * point.alpha + seed)

    solver.__module__ = bayes_optimal.__module__
    return solver


@pytest.mark.filterwarnings("ignore:seed 0 warns")
def test_an_interrupted_table_resumes_where_it_stopped(tmp_path):
    """A computation stopped at job 3 of 5 keeps the jobs that finished; run again, it computes
    only the rest, raises the stored jobs' warnings again, writes the table an uninterrupted run
    writes, and removes its stored jobs. Another key (another argument) reuses none of them."""
    calls, stop = [], {3}
    solver = _stoppable_solver(calls, stop)
    run = Run("t", tmp_path / "a", "smoke")
    p = Params(alpha=0.2)
    with pytest.raises(KeyboardInterrupt):
        run.solve("resumed", solver, [p], seeds=range(5))
    jobs = tmp_path / "a" / "build" / "jobs" / "resumed"
    assert len(list(jobs.rglob("*.pkl"))) == 4  # in-process: every job but the stopped one ran
    stop.clear()
    calls.clear()
    with pytest.warns(UserWarning, match="seed 0 warns"):  # from the stored job 0
        resumed = run.solve("resumed", solver, [p], seeds=range(5))
    assert calls == [3]
    assert not jobs.exists()
    whole = Run("t", tmp_path / "b", "smoke").solve("resumed", solver, [p], seeds=range(5))
    cols = ["seed", "test_error", "cache_key"]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols])

    stop.add(4)
    with pytest.raises(KeyboardInterrupt):
        run.solve("other", solver, [p], seeds=range(5))
    stop.clear()
    calls.clear()
    other = run.solve("other", solver, [p], seeds=range(5), scale=2.0)
    assert calls == [0, 1, 2, 3, 4]  # another key: nothing reused
    assert list(other["test_error"]) == pytest.approx([0.4, 1.4, 2.4, 3.4, 4.4])


def test_a_planning_run_lists_only_the_jobs_not_yet_stored(tmp_path, monkeypatch):
    """``make plan`` after an interrupted computation prices what is left, and keeps the
    stored jobs for the computation that follows."""
    calls, stop = [], {2}
    solver = _stoppable_solver(calls, stop)
    p = Params(alpha=0.2)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):
        Run("t", tmp_path, "smoke").solve("planned", solver, [p], seeds=range(4))
    plan = tmp_path / "plan.jsonl"
    monkeypatch.setenv("HDLORA_PLAN", str(plan))
    with pytest.warns(UserWarning):
        Run("t", tmp_path, "smoke").solve("planned", solver, [p], seeds=range(4))
    listed = [json.loads(line) for line in plan.read_text().splitlines()]
    assert [len(entry["jobs"]) for entry in listed] == [1]
    assert len(list((tmp_path / "build" / "jobs" / "planned").rglob("*.pkl"))) == 3


def test_lam_ft_jobs_share_one_pretraining_per_point():
    """lam_ft_jobs groups the points that differ only in λ' (order kept, λ' = ∞ included), and
    the table of recalibration_scan over its jobs (β = 1) holds exactly the records of simulate
    run point by point (one pre-training per point instead of one per λ')."""
    from hdlora.simulation import recalibration_scan, simulate

    base = Params(T=2, alpha=0.2, alpha_ft=3.0, lam=0.1, lam_ft=0.5)
    points = [
        base,
        base.replace(lam=0.3),
        base.replace(lam_ft=math.inf),
        base.replace(lam=0.3, lam_ft=1.0),
    ]
    jobs = tables.lam_ft_jobs(points)
    assert [(j["point"], j["lam_fts"]) for j in jobs] == [
        (base, [0.5, math.inf]),
        (points[1], [0.5, 1.0]),
    ]
    with pytest.raises(ValueError, match="lam_ft=0.5 is listed twice"):
        tables.lam_ft_jobs([base, base.replace(lam=0.3), base])
    kw = dict(seeds=[2], grid={"D": [12]}, n_test=50)
    shared = pd.concat(
        [
            tables.run_table(
                recalibration_scan, [j["point"]], lam_fts=j["lam_fts"], betas=[1.0], **kw
            )
            for j in jobs
        ]
    )
    alone = tables.run_table(simulate, points, **kw)
    keys = ["lam", "lam_ft"]
    shared, alone = (d.sort_values(keys).reset_index(drop=True) for d in (shared, alone))
    assert io.same_table(alone, shared, rtol=1e-12, ignore="wall_time")
