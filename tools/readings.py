"""Render the README's figure readings from the tables the figure notebooks wrote.

Every block between ``<!-- readings:<name> -->`` and ``<!-- /readings:<name> -->`` in README.md
is replaced by the Markdown table of ``<data>/<name>_readings.csv``
(:func:`hdlora.harness.readings.render_blocks`); the file is rewritten only when that changes
it. ``make figures`` runs this when it writes into the repository.

Usage: python tools/readings.py [--data DIR] [--readme FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hdlora.harness.io import write_bytes
from hdlora.harness.readings import render_blocks

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new = render_blocks(text, args.data)
    if new != text:
        write_bytes(args.readme, new.encode())
        print(f"{args.readme}: readings rendered from {args.data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
