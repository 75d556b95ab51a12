"""Run the same simulations with the library of a git revision and with the working tree, and
compare every field of their records: a refactor of the simulator keeps its numbers.

The committed simulation tables cannot show this by themselves: they were computed on another
day, under another load, and a rounding-level difference of the first L-BFGS steps can end
1e-11 away after thousands of iterations. This script runs both libraries now, on this machine,
on a set of records that exercise every path (two stages, reused sequences, β*, active
fine-tuning, the fine-tuning-only simulator with and without the teacher start, the
recalibration scan), each in its own process, and prints the largest relative change of each
record. The working tree is run with ``teacher="gaussian"`` when its simulator has a ``teacher``
argument (the i.i.d. teacher of eq. 6 that older revisions draw).

Usage: python tools/compare_simulations.py [--base REV]   (default: HEAD)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: fields renamed since older revisions: old name → new name
RENAMED = {
    "info_train_Delta_eff_hat": "info_Delta_eff_train",
    "info_train_Delta_eff_hat_se": "info_Delta_eff_train_se",
    "info_pool_Delta_eff_hat": "info_Delta_eff_pool",
    "info_pool_Delta_eff_hat_se": "info_Delta_eff_pool_se",
}

CASES = r"""
import inspect, json, sys, warnings
warnings.simplefilter("ignore")
from hdlora import EffectivePretraining, Params
from hdlora.simulation import recalibration_scan, simulate, simulate_finetune
kw = {"teacher": "gaussian"} if "teacher" in inspect.signature(simulate).parameters else {}
p3 = Params(T=2, kappa0=0.5, Delta=0.5, alpha=0.2, alpha_ft=3.0, lam=0.01, lam_ft=0.5, reuse=True)
p1 = Params(T=3, Delta=0.5, alpha=0.1, alpha_ft=3.0, lam=0.1, lam_ft=0.5)
p4 = Params(T=3, Delta=0.0, alpha=0.1, alpha_ft=3.0, lam=0.1, lam_ft=0.2)
eff = EffectivePretraining(Q0=1.5, Q=1.5, M=1.0)
recs = {
    "reused sequences (Fig. 3)": simulate(p3, 100, 0, progress=False, **kw),
    "two stages, beta = beta*": simulate(p1, 60, 1, beta=None, progress=False, **kw),
    "active fine-tuning": simulate(p1, 60, 2, rho=0.3, progress=False, **kw),
    "fine-tuning only, teacher start": simulate_finetune(
        p4, eff, 150, 0, teacher_start=True, progress=False, **kw),
    "fine-tuning only, active": simulate_finetune(p4, eff, 150, 1, rho=0.1, progress=False, **kw),
}
scan = recalibration_scan(p1, 60, 3, betas=[None, 0.8], lam_fts=[0.5, 2.0], progress=False, **kw)
recs |= {f"recalibration scan {i}": r for i, r in enumerate(scan)}
out = {name: {k: v for k, v in r.to_dict().items() if "wall" not in k and k != "info_teacher"}
       for name, r in recs.items()}
json.dump(out, open(sys.argv[1], "w"), default=str)
"""


def run_cases(lib: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(lib), HDLORA_PROGRESS="0")
    subprocess.run([sys.executable, "-c", CASES, str(out)], env=env, check=True)
    return json.loads(out.read_text())


def largest_change(old: dict, new: dict) -> tuple[float, str]:
    """The largest relative change over the fields of a record (NaN = NaN; text must match)."""
    worst = (0.0, "")
    for key, a in old.items():
        key = RENAMED.get(key, key)
        b = new.get(key, "<missing>")
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            if math.isnan(a) and math.isnan(b):
                continue
            rel = abs(a - b) / max(abs(a), abs(b), 1e-300)
        else:
            rel = 0.0 if a == b else math.inf
        if rel > worst[0]:
            worst = (rel, key)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="the git revision to compare with")
    base = ap.parse_args().base
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(tree), base], cwd=ROOT, check=True
        )
        try:
            old = run_cases(tree / "lib", Path(tmp) / "old.json")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True
            )
        new = run_cases(ROOT / "lib", Path(tmp) / "new.json")
    for name in old:
        rel, key = largest_change(old[name], new[name])
        print(f"{name:34s} {len(old[name]):4d} fields  largest relative change {rel:.1e}  {key}")


if __name__ == "__main__":
    main()
