"""Stage the hdlora book: book/ sources + the notebooks executed by `make figures` -> one Sphinx
source folder (under build/, never in notebooks/).

    python book/stage.py --executed build/executed/quick --out build/book-src NAME...

* checks that every notebook NAME has a finished run in ``<executed>/NAME.ipynb`` (papermill's
  record: ended, no exception); else it names the others and the command that runs them, and
  exits 2. It warns when a copy is older than its source ``notebooks/NAME.py``;
* copies the executed notebooks into ``<out>/notebooks/`` as they are (their outputs are the
  book's: nothing is executed again), with one change: inline code naming the library in the
  prose (```hdlora.theory.pretrain```, ```hdlora.simulation.simulate```) becomes a cross-reference
  to the API page, whose ``[source]`` links show the highlighted code (``sphinx.ext.viewcode``),
  and the name of another notebook (```05_bayes_optimal```) a link to its page;
* writes the landing page (``book/index.md`` with the contents table and the build record filled
  in), the figure index (``figures.md``: every image output of every notebook, the paper's
  Figures 1-6 first) and the API page (``api.md``: ``automodule`` of every module of ``hdlora``);
* writes a file only when its content changed, so that Sphinx rebuilds only what changed.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from hdlora.harness.readings import render_errata

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent

# The paper's figures, from their captions (arXiv 2606.05899v1); a notebook `figN_*.py` reproduces
# Figure N.
PAPER_FIGURES = {
    1: r"Fine-tuning test error $\mathcal E'$ against the pre-training ridge $\lambda$ for "
    r"$\lambda'\in\{0.05,1,\infty\}$, $\Delta=0.5$ and $\Delta=2$, with the Bayes-optimal "
    r"benchmark (§4).",
    2: r"Effect of pre-training on the fine-tuning task: $\mathcal E'$ against "
    r"$\Delta_{\rm eff}=\Delta/2+Q_0-2M+Q$ (softmax; $\Delta=0$ and $\Delta=2$) (§4.1).",
    3: r"Fine-tuning on the pre-training sequences ($\mathrm e=1$): pre-training errors "
    r"$\mathcal L$, $\mathcal E$, fine-tuning error $\mathcal E'$ and overlap $o_w$ against "
    r"$\lambda$ and $\lambda'$ (§4.2).",
    4: r"Active fine-tuning: $\mathcal E'(\hat W,\hat w)$ and $\mathcal E'(\hat W,\hat "
    r"w_{\rm ActFT})$ and the overlaps $o_w$ against $\Delta_{\rm eff}$, for labelling ratios "
    r"$\rho$ (§4.3).",
    5: r"As Figure 2 for the rescaled identity activation $\sigma(x)=x/T$ (App. E).",
    6: r"Recalibration of the frozen attention map: $\mathcal E(\beta)$ against "
    r"$\beta/\beta^\star$, and $\mathcal E'$ against $\lambda'$ with and without recalibration "
    r"(App. E).",
}

REF = re.compile(r"(?<![`}])`(hdlora(?:\.[A-Za-z_]\w*)+)(\(\))?`(?!`)")
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg"}


def write_if_changed(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` unless it holds exactly that (Sphinx stays incremental)."""
    raw = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == raw:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def resolve(dotted: str) -> tuple[str, str] | None:
    """The Sphinx role and canonical target of a dotted name of the library, or None.

    ``hdlora.theory.state_evolution`` -> ("obj", "hdlora.theory.two_stage.state_evolution"): the
    API page documents every object where it is defined."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - not a module: try the shorter prefix
            continue
        module = obj
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        break
    else:
        return None
    if inspect.ismodule(obj):
        return "mod", obj.__name__
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and mod.startswith("hdlora") and qual and "<" not in qual:
        if not any(p.startswith("_") for p in qual.split(".")):
            return "obj", f"{mod}.{qual}"
    return "mod", module.__name__  # a constant or a private object: its module


def link_library(text: str) -> str:
    """```hdlora.x.y``` in markdown -> a cross-reference to the API page (text unchanged)."""

    def sub(m: re.Match) -> str:
        target = resolve(m.group(1))
        if target is None:
            return m.group(0)
        role, name = target
        shown = m.group(1) + (m.group(2) or "")
        return f"{{py:{role}}}`{shown} <{name}>`"

    return REF.sub(sub, text)


def source_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def title_of(nb: dict, name: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in source_text(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


def link_notebooks(text: str, names: list[str]) -> str:
    """```02_pretraining_theory``` (or ```….py```) in a notebook's prose -> a link to its page."""
    alternatives = "|".join(map(re.escape, names))
    pattern = re.compile(r"(?<![`}\[])`(" + alternatives + r")(\.py)?`(?![`\]])")
    return pattern.sub(lambda m: f"[{m.group(0)}]({m.group(1)}.ipynb)", text)


def stage_notebook(name: str, nb: dict, out: Path, names: list[str]) -> list[dict]:
    """Write the notebook with linked prose; return its images (name, index, section, path)."""
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("widgets", None)  # no widget state: nothing to fetch
    images, section = [], title_of(nb, name)
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = source_text(cell)
            cell["source"] = link_notebooks(link_library(text), names)
            for line in text.splitlines():
                if re.match(r"#{1,3} ", line):
                    section = line.lstrip("#").strip()
        for output in cell.get("outputs", []):
            for mime, ext in IMAGE_TYPES.items():
                if mime in output.get("data", {}):
                    data = output["data"][mime]
                    data = "".join(data) if isinstance(data, list) else data
                    path = f"_figures/{name}-{len(images) + 1}.{ext}"
                    write_if_changed(out / path, base64.b64decode(data))
                    images.append(
                        {"name": name, "index": len(images) + 1, "section": section, "path": path}
                    )
    write_if_changed(out / "notebooks" / f"{name}.ipynb", json.dumps(nb, indent=1) + "\n")
    return images


def finished(nb: dict) -> bool:
    """Papermill's record says the run ended without an exception."""
    pm = nb.get("metadata", {}).get("papermill", {})
    return bool(pm.get("end_time")) and not pm.get("exception")


def run_record(nb: dict) -> dict:
    pm = nb.get("metadata", {}).get("papermill", {})
    params = pm.get("parameters", {})
    start, duration = pm.get("start_time") or "", pm.get("duration")
    return {
        "profile": params.get("profile", "?"),
        "date": start[:16].replace("T", " ") + (" UTC" if start else ""),
        "duration": f"{duration:.0f} s" if isinstance(duration, int | float) else "?",
    }


def contents_page(index_md: str, notebooks: dict[str, dict], executed: Path) -> str:
    sections = [n for n in notebooks if not n.startswith("fig")]
    rows = ["| page | notebook | run (profile, start, duration) |", "|---|---|---|"]
    for name in sections:
        r = run_record(notebooks[name])
        rows.append(
            f"| [{title_of(notebooks[name], name)}](notebooks/{name}.ipynb) | `{name}.py` "
            f"| {r['profile']}, {r['date']}, {r['duration']} |"
        )
    rows += ["", "| figure | notebook | run (profile, start, duration) |", "|---|---|---|"]
    for k in PAPER_FIGURES:
        names = [n for n in notebooks if n.startswith(f"fig{k}_")]
        if not names:
            rows.append(f"| Figure {k} | not reproduced yet | – |")
        for name in names:
            r = run_record(notebooks[name])
            rows.append(
                f"| [Figure {k}](notebooks/{name}.ipynb) | `{name}.py` "
                f"| {r['profile']}, {r['date']}, {r['duration']} |"
            )
    profiles = sorted({run_record(nb)["profile"] for nb in notebooks.values()})
    build = (
        f"This build shows the notebooks as executed with profile "
        f"{', '.join(f'`{p}`' for p in profiles)} (`{executed.as_posix()}/`)."
    )
    if "smoke" in profiles:
        build += (
            "\n\n:::{note}\nProfile `smoke` is the CI's: tiny sizes, seconds per notebook. Its "
            "numbers and curves only show that the pipeline runs; `make figures && make book` "
            "(profile `quick`) or `PROFILE=paper` give the reproduction.\n:::"
        )
    return index_md.replace("<!-- hdlora:contents -->", "\n".join(rows)).replace(
        "<!-- hdlora:build -->", build
    )


def figure_block(img: dict, title: str) -> str:
    return (
        f":::{{figure}} {img['path']}\n:width: 100%\n:alt: {img['name']}, figure {img['index']}\n\n"
        f"{title}: [`{img['name']}`](notebooks/{img['name']}.ipynb), section “{img['section']}”"
        "\n:::\n"
    )


def figures_page(notebooks: dict[str, dict], images: dict[str, list[dict]]) -> str:
    lines = [
        "# Figure index",
        "",
        "Every figure of the book on one page, as drawn by the last run of its notebook: the "
        "paper's Figures 1–6 first, then the figures of the section notebooks. Each caption "
        "links to the notebook and names the section the figure closes.",
        "",
        "## The paper's figures",
        "",
    ]
    for k, caption in PAPER_FIGURES.items():
        lines += [f"### Figure {k}", "", f"*Paper:* {caption}", ""]
        names = [n for n in notebooks if n.startswith(f"fig{k}_")]
        if not names:
            lines += [f"Not reproduced yet (no notebook `fig{k}_*.py`).", ""]
        for name in names:
            for img in images[name]:
                lines += [figure_block(img, f"Figure {k}"), ""]
    lines += ["## Figures of the section notebooks", ""]
    for name, nb in notebooks.items():
        if name.startswith("fig") or not images[name]:
            continue
        lines += [f"### {title_of(nb, name)}", ""]
        for img in images[name]:
            lines += [figure_block(img, f"Figure {img['index']} of the notebook"), ""]
    return "\n".join(lines)


def api_page() -> str:
    import hdlora

    names = ["hdlora"] + sorted(
        m.name
        for m in pkgutil.walk_packages(hdlora.__path__, "hdlora.")
        if not any(p.startswith("_") for p in m.name.split("."))
    )
    lines = [
        "# The library `hdlora`",
        "",
        "Every module of the package `hdlora` (in `lib/hdlora/`), with its docstrings; each "
        "`[source]` link opens the highlighted source of the object, and the module pages "
        "link back here. The notebooks' prose links its mentions of the library to this page.",
        "",
    ]
    for name in names:
        # autodoc writes reStructuredText: parse it as such (in MyST it would come out as text)
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    return "\n".join(lines)


def write_conf(out: Path) -> None:
    """conf.py from _config.yml and _toc.yml (`jupyter-book config sphinx`), plus the path of
    the local extensions, which jupyter-book adds only inside its own `build`, and less
    sphinx-thebe, which jupyter-book always loads: its script names a CDN and, next to
    sphinx-book-theme, is declared twice on each page (a console error); the book runs nothing."""
    jb = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jb), "config", "sphinx", str(out)], check=True, capture_output=True)
    tools = sorted(BOOK.glob("*.py")) + sorted(BOOK.glob("_ext/*.py")) + [BOOK / "_config.yml"]
    tools_hash = hashlib.sha256(b"".join(p.read_bytes() for p in tools)).hexdigest()[:16]
    conf = out / "conf.py"
    conf.write_text(
        conf.read_text()
        + "\n# book/stage.py: the local extensions of _config.yml (book/_ext)\n"
        + "import os, sys  # noqa: E401\nsys.path.insert(0, os.path.abspath('_ext'))\n"
        + "extensions.remove('sphinx_thebe')  # noqa: F821\n"
        + "# the code that makes the book: a change rebuilds every page\n"
        + f"hdlora_book_tools = {tools_hash!r}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executed", type=Path, required=True, help="build/executed/<profile>")
    ap.add_argument("--out", type=Path, required=True, help="the staging folder (under build/)")
    ap.add_argument("names", nargs="+", help="the notebooks (names in notebooks/, no .py)")
    args = ap.parse_args(argv)
    executed, out = args.executed, args.out

    notebooks, not_run = {}, []
    for n in args.names:
        path = executed / f"{n}.ipynb"
        if not path.exists():
            not_run.append(f"{n}: not executed")
            continue
        notebooks[n] = json.loads(path.read_text())
        if not finished(notebooks[n]):
            not_run.append(f"{n}: no finished run (failed, or still running: see {n}.log)")
        src = ROOT / "notebooks" / f"{n}.py"
        if src.exists() and src.stat().st_mtime > path.stat().st_mtime:
            print(f"make book: warning: {path} is older than {src}", file=sys.stderr)
    if not_run:
        profile = executed.name
        print(
            f"make book: the book shows the notebooks as `make figures` executed them, and "
            f"{executed}/ lacks\n  " + "\n  ".join(not_run) + "\n"
            f"Run `make figures PROFILE={profile}` (or `make <name> PROFILE={profile}`) first.",
            file=sys.stderr,
        )
        return 2

    for stale in (out / "notebooks").glob("*.ipynb"):
        if stale.stem not in notebooks:
            stale.unlink()
    images = {n: stage_notebook(n, nb, out, list(notebooks)) for n, nb in notebooks.items()}
    kept = {img["path"] for imgs in images.values() for img in imgs}
    for stale in (out / "_figures").glob("*"):
        if f"_figures/{stale.name}" not in kept:
            stale.unlink()
    for conf in ("_config.yml", "_toc.yml", "_ext/hdlora_book.py"):
        write_if_changed(out / conf, (BOOK / conf).read_text())
    index_src = (BOOK / "index.md").read_text()
    errata = render_errata(pd.read_csv(ROOT / "data" / "errata.csv"), link=True)
    index_src = index_src.replace("<!-- hdlora:errata -->", errata)
    index_md = contents_page(index_src, notebooks, executed)
    write_if_changed(out / "index.md", link_library(index_md))
    write_if_changed(out / "figures.md", figures_page(notebooks, images))
    write_if_changed(out / "api.md", api_page())
    write_conf(out)
    n_img = sum(len(v) for v in images.values())
    print(f"make book: staged {len(notebooks)} notebooks ({n_img} figures) in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
