"""The committed results match the committed code: every cached table under data/ carries the key
that the current library would give it (its provenance record names the code versions that went
into the key), so a library change that moves a cached number fails here until the table is
recomputed by `make figures` and committed. Nothing is recomputed."""

from hdlora.harness.io import repo_root
from hdlora.harness.tables import stale_tables


def test_every_cached_table_under_data_matches_the_current_code():
    data = repo_root() / "data"
    stale = stale_tables(data)
    lines = "\n".join(f"  data/{name}: {why}" for name, why in stale.items())
    assert not stale, (
        f"{len(stale)} committed table(s) would be recomputed by the current code:\n{lines}\n"
        "Run `make figures` and commit data/ (and figures/)."
    )


def test_the_readme_states_the_recorded_fresh_clone_runs():
    """The README's sentence about a fresh clone's `make figures` is the one that
    tools/fresh_clone.py writes from bench/results/fresh_clone.json (never typed by hand)."""
    import importlib.util
    import json

    root = repo_root()
    spec = importlib.util.spec_from_file_location("fresh_clone", root / "tools" / "fresh_clone.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    record = root / "bench" / "results" / "fresh_clone.json"
    runs = json.loads(record.read_text()) if record.exists() else []
    start, end = tool.README_MARKERS
    readme = (root / "README.md").read_text()
    assert readme[readme.index(start) + len(start) : readme.index(end)] == tool.sentence(runs)
    start, end = tool.RUNTIME_MARKERS
    assert readme[readme.index(start) + len(start) : readme.index(end)] == tool.runtime_table(runs)


def test_the_readme_states_the_recorded_benchmarks():
    """The README's precision, sweep and search-cost blocks are those that bench_precision.py,
    bench_sweep.py and bench_simulate.py write from their records under bench/results/ (never
    typed by hand)."""
    import importlib.util
    import json
    import sys

    root = repo_root()
    readme = (root / "README.md").read_text()
    for name, block in (
        ("bench_precision", "block"),
        ("bench_sweep", "block"),
        ("bench_simulate", "search_cost_block"),
    ):
        spec = importlib.util.spec_from_file_location(name, root / "bench" / f"{name}.py")
        bench = importlib.util.module_from_spec(spec)
        sys.modules[name] = bench  # its dataclasses look their module up
        try:
            spec.loader.exec_module(bench)
        finally:
            del sys.modules[name]
        record = json.loads(bench.RESULT.read_text())
        start, end = bench.MARKERS
        shown = readme[readme.index(start) + len(start) : readme.index(end)]
        assert shown == getattr(bench, block)(record)
