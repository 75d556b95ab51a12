"""Does a fresh clone's `make figures` reproduce the committed results and leave the clone clean?

Clones the committed HEAD of this repository into a new folder (or reuses one with --clone), runs
the given make targets there one after the other (default: ``test`` then ``figures``; a target
named twice runs twice, e.g. ``figures figures``: does the second run do nothing?), times each,
and reads ``git status --porcelain`` at the end. ``--recompute`` passes RECOMPUTE=True: every
table is computed again instead of read from the committed cache (the time of a first ``make
figures`` on a machine with no results). ``--threads N`` sets OMP_NUM_THREADS,
MKL_NUM_THREADS and OPENBLAS_NUM_THREADS for the run (another thread count, another summation
order); a reused clone has its ``build/executed`` stamps removed first, so that every notebook
runs again. Exit status 1 when the clone is left modified.

``--record FILE`` adds the run to a JSON list and writes the README's sentence about fresh
clones (between the markers ``<!-- fresh-clone -->`` and ``<!-- /fresh-clone -->``) from that
list; a unit test holds the README to the record.

Usage: python tools/fresh_clone.py [--targets test figures] [--recompute] [--threads N]
                                   [--clone DIR] [--record bench/results/fresh_clone.json]
                                   [--label TEXT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hdlora.harness.io import replace_between, write_bytes

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def prepare(clone: Path | None) -> Path:
    """A fresh clone of HEAD in a new folder, or ``clone`` with its notebook stamps removed."""
    if clone is None:
        clone = Path(tempfile.mkdtemp(prefix="hdlora-fresh-")) / "hdlora"
        git("clone", "-q", str(ROOT), str(clone), cwd=ROOT)
    else:
        shutil.rmtree(clone / "build" / "executed", ignore_errors=True)
    return clone


def run_targets(
    clone: Path, targets: list[str], threads: int | None, recompute: bool = False
) -> dict[str, float]:
    """Run ``make <target>`` for each target in ``clone`` (with RECOMPUTE=True when
    ``recompute``); seconds per target. Stops (exit 2) at a failing target, with the tail of its
    output."""
    env = dict(os.environ)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    seconds = {}
    for target in targets:
        t0 = time.perf_counter()
        make = ["make", target, *(["RECOMPUTE=True"] if recompute else [])]
        p = subprocess.run(make, cwd=clone, env=env, capture_output=True, text=True)
        name = f"{target} again" if target in seconds else target  # a second run of a target
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"make {target}: rc {p.returncode}, {seconds[name]:.0f} s", flush=True)
        if p.returncode != 0:
            print((p.stdout + p.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(2)
    return seconds


README_MARKERS = ("<!-- fresh-clone -->", "<!-- /fresh-clone -->")
RUNTIME_MARKERS = ("<!-- runtimes -->", "<!-- /runtimes -->")


def notebook_seconds(clone: Path, profile: str = "quick") -> dict[str, int]:
    """Seconds per notebook of the clone's last ``make figures`` (the ``.seconds`` files the
    Makefile writes next to each executed notebook)."""
    folder = clone / "build" / "executed" / profile
    return {f.stem: int(f.read_text()) for f in sorted(folder.glob("*.seconds"))}


def runtime_table(runs: list[dict]) -> str:
    """The README's table of notebook runtimes: the latest recorded run that recomputed every
    table (a first ``make figures``), one row per notebook, and the whole ``make figures``."""
    cold = [r for r in runs if r.get("recompute") and r.get("notebooks")]
    if not cold:
        return "\n(no run with every table recomputed is recorded yet)\n"
    r = cold[-1]
    head = (
        f"\nA first `make figures` (every table recomputed, `RECOMPUTE=True`; commit "
        f"{r['commit'][:7]}, {r['date']}, {r['machine']}, two notebooks at once on one "
        f"thread each): **{r['seconds']['figures'] / 60:.0f} min** in all.\n\n"
        "| notebook | seconds |\n|---|---|\n"
    )
    rows = "".join(f"| `{name}` | {sec} |\n" for name, sec in r["notebooks"].items())
    return head + rows


def _step(target: str, seconds: float) -> str:
    """One step of :func:`sentence`: "`make figures` 121 s", "`make figures` again 2 s"."""
    base = target.removesuffix(" again")
    return f"`make {base}`{' again' if base != target else ''} {seconds:.0f} s"


def sentence(runs: list[dict]) -> str:
    """The README's sentence about the recorded runs, one clause per run."""
    if not runs:
        return "(no run recorded yet)"
    clauses = []
    for r in runs:
        steps = ", then ".join(_step(t, s) for t, s in r["seconds"].items())
        where = "the same clone, every notebook rerun" if r["reused_clone"] else "a fresh clone"
        if r.get("recompute"):
            where += ", every table recomputed (RECOMPUTE=True)"
        threads = f", {r['threads']} thread(s) for OMP/MKL/OpenBLAS" if r["threads"] else ""
        n_modified = len(r["modified_files"])
        left = f"{n_modified} file(s) modified" if n_modified else "nothing (a clean clone)"
        clauses.append(
            f"{where} (commit {r['commit'][:7]}{threads}; {r['date']}, {r['machine']}): "
            f"{steps}; `git status --porcelain` then listed {left}"
        )
    return "; ".join(clauses) + "."


def write_readme(runs: list[dict], readme: Path = ROOT / "README.md") -> None:
    """Put :func:`sentence` and :func:`runtime_table` between their README markers."""
    text = readme.read_text()
    for markers, block in (
        (README_MARKERS, sentence(runs)),
        (RUNTIME_MARKERS, runtime_table(runs)),
    ):
        text = replace_between(text, *markers, block)
    write_bytes(readme, text.encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["test", "figures"])
    ap.add_argument("--recompute", action="store_true", help="make ... RECOMPUTE=True")
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL/OpenBLAS thread count")
    ap.add_argument("--clone", type=Path, default=None, help="reuse this clone")
    ap.add_argument("--record", type=Path, default=None, help="append the run to this JSON")
    ap.add_argument("--label", default=None, help="a name for the run in the record")
    args = ap.parse_args(argv)

    clone = prepare(args.clone)
    commit = git("rev-parse", "HEAD", cwd=clone).strip()
    print(f"clone of {commit[:10]} in {clone}", flush=True)
    seconds = run_targets(clone, args.targets, args.threads, args.recompute)
    modified = [line for line in git("status", "--porcelain", cwd=clone).splitlines() if line]
    print(f"git status --porcelain: {len(modified)} line(s)")
    for line in modified:
        print(f"  {line}")
    if args.record is not None:
        record = {
            "label": args.label or ("threads=" + str(args.threads) if args.threads else "default"),
            "commit": commit,
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": args.threads,
            "reused_clone": args.clone is not None,
            "recompute": args.recompute,
            "seconds": seconds,
            "modified_files": modified,
            "notebooks": notebook_seconds(clone) if "figures" in args.targets else {},
        }
        path = args.record if args.record.is_absolute() else ROOT / args.record
        runs = json.loads(path.read_text()) if path.exists() else []
        runs = [r for r in runs if r["label"] != record["label"]] + [record]
        write_bytes(path, (json.dumps(runs, indent=1) + "\n").encode())  # atomic
        write_readme(runs)
        print(f"recorded as '{record['label']}' in {path}, and in the README")
    return 1 if modified else 0


if __name__ == "__main__":
    sys.exit(main())
