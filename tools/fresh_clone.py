"""Does a fresh clone's `make figures` reproduce the committed results and leave the clone clean?

Clones the committed HEAD of this repository into a new folder (or reuses one with --clone), runs
the given make targets there one after the other (default: ``test`` then ``figures``), times
each, and reads ``git status --porcelain`` at the end. ``--threads N`` sets OMP_NUM_THREADS,
MKL_NUM_THREADS and OPENBLAS_NUM_THREADS for the run (another thread count, another summation
order); a reused clone has its ``build/executed`` stamps removed first, so that every notebook
runs again. Exit status 1 when the clone is left modified.

``--record FILE`` adds the run to a JSON list and writes the README's sentence about fresh
clones (between the markers ``<!-- fresh-clone -->`` and ``<!-- /fresh-clone -->``) from that
list; a unit test holds the README to the record.

Usage: python tools/fresh_clone.py [--targets test figures] [--threads N] [--clone DIR]
                                   [--record bench/results/fresh_clone.json] [--label TEXT]
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

from hdlora.harness.io import write_bytes

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


def run_targets(clone: Path, targets: list[str], threads: int | None) -> dict[str, float]:
    """Run ``make <target>`` for each target in ``clone``; seconds per target. Stops (exit 2)
    at a failing target, with the tail of its output."""
    env = dict(os.environ)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    seconds = {}
    for target in targets:
        t0 = time.perf_counter()
        p = subprocess.run(["make", target], cwd=clone, env=env, capture_output=True, text=True)
        seconds[target] = round(time.perf_counter() - t0, 1)
        print(f"make {target}: rc {p.returncode}, {seconds[target]:.0f} s", flush=True)
        if p.returncode != 0:
            print((p.stdout + p.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(2)
    return seconds


README_MARKERS = ("<!-- fresh-clone -->", "<!-- /fresh-clone -->")


def sentence(runs: list[dict]) -> str:
    """The README's sentence about the recorded runs, one clause per run."""
    if not runs:
        return "(no run recorded yet)"
    clauses = []
    for r in runs:
        steps = ", then ".join(f"`make {t}` {s:.0f} s" for t, s in r["seconds"].items())
        where = "the same clone, every notebook rerun" if r["reused_clone"] else "a fresh clone"
        threads = f", {r['threads']} thread(s) for OMP/MKL/OpenBLAS" if r["threads"] else ""
        n_modified = len(r["modified_files"])
        left = f"{n_modified} file(s) modified" if n_modified else "nothing (a clean clone)"
        clauses.append(
            f"{where} (commit {r['commit'][:7]}{threads}; {r['date']}, {r['machine']}): "
            f"{steps}; `git status --porcelain` then listed {left}"
        )
    return "; ".join(clauses) + "."


def write_readme(runs: list[dict], readme: Path = ROOT / "README.md") -> None:
    """Put :func:`sentence` between the README's markers."""
    text = readme.read_text()
    start, end = (text.index(m) for m in README_MARKERS)
    new = text[: start + len(README_MARKERS[0])] + sentence(runs) + text[end:]
    write_bytes(readme, new.encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["test", "figures"])
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL/OpenBLAS thread count")
    ap.add_argument("--clone", type=Path, default=None, help="reuse this clone")
    ap.add_argument("--record", type=Path, default=None, help="append the run to this JSON")
    ap.add_argument("--label", default=None, help="a name for the run in the record")
    args = ap.parse_args(argv)

    clone = prepare(args.clone)
    commit = git("rev-parse", "HEAD", cwd=clone).strip()
    print(f"clone of {commit[:10]} in {clone}", flush=True)
    seconds = run_targets(clone, args.targets, args.threads)
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
            "seconds": seconds,
            "modified_files": modified,
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
