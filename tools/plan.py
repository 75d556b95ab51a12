"""The cost plan of a profile: every notebook's jobs, listed without running them, and priced.

Executes each notebook with ``HDLORA_PLAN`` set (:mod:`hdlora.harness.plan`): a table that is
not cached is listed instead of computed, and the notebook goes on with the committed table of
that name as a stand-in (cells that fail on a stand-in are counted, and ignored). The listed
jobs are priced by :class:`hdlora.harness.costs.CostModel`, fitted to the measured times of the
committed tables. Prints, per notebook, the tables to compute, their jobs and predicted hours
on one CPU core and on a GPU, and the wall time on the given numbers of workers.

``--record FILE`` writes the plan (JSON) and the README's plan table between the markers
``<!-- plan -->`` and ``<!-- /plan -->``.

Usage: python tools/plan.py [--profile paper] [--workers 1 16 64] [--notebooks NAME ...]
                            [--record bench/results/plan_paper.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import pandas as pd
from nbclient import NotebookClient
from papermill.parameterize import parameterize_notebook

from hdlora.harness.costs import CostModel, machine_speed, price_table, wall_seconds
from hdlora.harness.io import replace_between, write_bytes
from hdlora.harness.plan import read_plan
from hdlora.harness.profiles import GPU_SOLVERS

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- plan -->", "<!-- /plan -->")


def list_jobs(notebook: Path, profile: str, plan: Path, cell_timeout: int) -> dict[str, int]:
    """Execute ``notebook`` in planning mode (its tables appended to ``plan``); the number of
    cells that failed on a stand-in table, and of cells stopped past ``cell_timeout`` seconds
    (a computation of the notebook's own, outside any table: not priced)."""
    nb = jupytext.read(notebook)
    nb.metadata.setdefault("papermill", {})
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    out_dir = plan.parent / notebook.stem
    nb = parameterize_notebook(
        nb, dict(profile=profile, out_dir=str(out_dir), progress=False), kernel_name="hdlora"
    )
    os.environ.update(HDLORA_PLAN=str(plan), HDLORA_PROGRESS="0")
    client = NotebookClient(
        nb, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=True,
        kernel_name="hdlora", resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )  # fmt: skip
    client.execute()
    counts = {"failed": 0, "timed_out": 0}
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            counts["timed_out" if errors[0].get("ename") == "KeyboardInterrupt" else "failed"] += 1
    return counts


def summary(priced: pd.DataFrame, failed: dict[str, dict], workers: list[int]) -> pd.DataFrame:
    """One row per notebook (and a total): tables to compute, jobs, CPU and GPU hours, wall
    hours on each number of workers, cells that failed on stand-ins."""
    rows = []
    groups = [*priced.groupby("notebook", sort=False), ("total", priced)]
    for name, g in groups:
        row = dict(notebook=name, tables=len(g), jobs=int(g["jobs"].sum()),
                   cpu_hours=g["cpu_seconds"].sum() / 3600,
                   gpu_hours=g["gpu_seconds"].sum() / 3600,
                   unpriced_tables=int(g["cpu_seconds"].isna().sum()))  # fmt: skip
        for w in workers:
            row[f"wall_hours_{w}_cpus"] = wall_seconds(g, w) / 3600
            row[f"wall_hours_{w}_gpus"] = wall_seconds(g, w, gpu=True) / 3600
        counts = list(failed.values()) if name == "total" else [failed.get(name, {})]
        for kind in ("failed", "timed_out"):
            row[f"cells_{kind}"] = sum(c.get(kind, 0) for c in counts)
        rows.append(row)
    return pd.DataFrame(rows)


def readme_block(table: pd.DataFrame, meta: dict) -> str:
    """The README's plan: the command, when and where, and the table (hours)."""
    head = (
        f"\n`make plan PROFILE={meta['profile']}` (commit {meta['commit'][:7]}, {meta['date']}; "
        f"{meta['seconds']:.0f} s to list and price the jobs). CPU hours are one core of the "
        f"machine that made the plan, which takes {meta['speed']:.2f} times the seconds of the "
        "one that measured the committed tables (`machine_speed`). GPU hours are an H200's "
        "(`hdlora.harness.costs.GPU_MODEL`, measured by `bench/bench_gpu.py`); wall hours are "
        "lower bounds.\n\n"
    )
    cells = table.round(2).astype(str).to_numpy().tolist()
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--notebooks", nargs="+", default=None)
    ap.add_argument("--cell-timeout", type=int, default=120)
    ap.add_argument("--record", type=Path, default=None)
    ap.add_argument("--no-calibrate", action="store_true",
                    help="price CPU time on the machine of the committed tables")  # fmt: skip
    args = ap.parse_args(argv)

    names = args.notebooks or sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))
    plan = Path(tempfile.mkdtemp(prefix="hdlora-plan-")) / "plan.jsonl"
    t0, failed = time.perf_counter(), {}
    model = CostModel.fit(ROOT / "data")
    if not args.no_calibrate:  # CPU hours of this machine, measured before any kernel starts
        model.speed = machine_speed(model)
    print(f"machine speed factor: {model.speed:.2f}", file=sys.stderr)
    for name in names:
        failed[name] = list_jobs(ROOT / "notebooks" / f"{name}.py", args.profile, plan,
                                 args.cell_timeout)  # fmt: skip
        print(f"{name}: listed; cells {failed[name]}", file=sys.stderr)
    gpu = GPU_SOLVERS[args.profile]
    priced = pd.DataFrame([price_table(e, model, gpu) for e in read_plan(plan)])
    if priced.empty:
        print("nothing to compute: every table is cached")
        return 0
    table = summary(priced, failed, args.workers)
    print(table.round(2).to_string(index=False))
    if args.record is not None:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        meta = dict(profile=args.profile, commit=commit, date=datetime.date.today().isoformat(),
                    seconds=time.perf_counter() - t0, speed=model.speed)  # fmt: skip
        record = dict(meta, notebooks=table.to_dict("records"), tables=priced.to_dict("records"))
        path = args.record if args.record.is_absolute() else ROOT / args.record
        write_bytes(path, (json.dumps(record, indent=1, default=float) + "\n").encode())
        readme = ROOT / "README.md"
        text = readme.read_text()
        if all(m in text for m in MARKERS):
            text = replace_between(text, *MARKERS, readme_block(table, meta))
            write_bytes(readme, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
