"""The longest functions and modules of lib/: code lines (docstrings, comments, blank lines out).

Usage: python tools/function_sizes.py [--max-lines 80] [--max-module 500]; exits 1 when a
function or a module is over its limit.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_lines(source: str, node: ast.AST) -> int:
    """Lines of ``node`` that hold code (not its docstring, a comment or a blank line)."""
    lines = set(range(node.lineno, node.end_lineno + 1))
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            lines -= set(range(body[0].lineno, body[0].end_lineno + 1))
    src = source.splitlines()
    keep = set()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for tok in tokens:
        if tok.type not in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENCODING,
            tokenize.ENDMARKER,
        ):
            keep |= set(range(tok.start[0], tok.end[0] + 1))
    return len([i for i in lines & keep if src[i - 1].strip()])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-lines", type=int, default=80)
    ap.add_argument("--max-module", type=int, default=500)
    args = ap.parse_args(argv)
    over = 0
    for path in sorted((ROOT / "lib").rglob("*.py")):
        source = path.read_text()
        n_module = len(source.splitlines())
        rel = path.relative_to(ROOT)
        if n_module > args.max_module:
            print(f"module {rel}: {n_module} lines")
            over += 1
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = code_lines(source, node)
                if n > args.max_lines:
                    print(f"function {rel}:{node.lineno} {node.name}: {n} code lines")
                    over += 1
    print(
        f"{over} over the limits ({args.max_lines} code lines a function, "
        f"{args.max_module} lines a module)"
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
