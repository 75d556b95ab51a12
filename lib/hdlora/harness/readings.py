r"""The paper's readings of its figures, checked and kept as data.

Each figure notebook states the paper's claims about its figure ("active fine-tuning improves
the test error", "a finite λ minimises E") and measures them on its own results. A reading is
one row of a tidy table (:data:`COLUMNS`): the figure, the claim in the paper's words and where
it is printed, the quantity measured, the paper's value where it gives one, the measured value
and its standard error, a verdict (:data:`VERDICTS`) and the reason. The notebook writes its
rows to ``data/<figure>_readings.csv``; the README's figure notes are rendered from those tables
(:func:`render_markdown`, ``tools/readings.py``), so that no number in them is typed by hand.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hdlora.harness.io import replace_between

COLUMNS = [
    "figure",
    "claim",
    "location",
    "quantity",
    "paper",
    "measured",
    "se",
    "verdict",
    "reason",
]
#: holds / partly / fails: the paper's claim against the measurement; reported: a measurement
#: the paper makes no claim about (an agreement statistic, a size)
VERDICTS = ("holds", "partly", "fails", "reported")


def reading(
    *,
    figure: str,
    claim: str,
    location: str,
    quantity: str,
    measured: float,
    verdict: str,
    reason: str = "",
    paper: float = math.nan,
    se: float = math.nan,
) -> dict:
    """One row of the readings table; ``verdict`` one of :data:`VERDICTS`."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got verdict={verdict!r}")
    return {
        "figure": figure,
        "claim": claim,
        "location": location,
        "quantity": quantity,
        "paper": float(paper),
        "measured": float(measured),
        "se": float(se),
        "verdict": verdict,
        "reason": reason,
    }


def verdict_of(holds: bool | None, partly: bool = False) -> str:
    """holds / partly / fails from a boolean check (``partly`` when it holds in part)."""
    if holds:
        return "holds"
    return "partly" if partly else "fails"


def readings_table(rows: list[dict]) -> pd.DataFrame:
    """The rows of :func:`reading` as a table with the columns :data:`COLUMNS`."""
    return pd.DataFrame(rows, columns=COLUMNS)


def format_value(x: float, se: float = math.nan) -> str:
    """``x ± se`` with the digits the standard error allows (two significant digits of se);
    without a standard error, 4 significant digits."""
    if not np.isfinite(x):
        return "—" if math.isnan(x) else str(x)
    if np.isfinite(se) and se > 0:
        digits = max(0, 1 - math.floor(math.log10(se)))
        return f"{x:.{digits}f} ± {se:.{digits}f}"
    return f"{x:.4g}"


def render_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of the readings: claim (where), quantity, measured, paper, verdict and
    reason; the text the README shows between its markers."""
    lines = [
        "| claim (where) | quantity | measured | paper | verdict | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        paper = "" if math.isnan(r.paper) else format_value(r.paper)
        cells = [f"{r.claim} ({r.location})", r.quantity, format_value(r.measured, r.se), paper]
        cells += [r.verdict, r.reason if isinstance(r.reason, str) else ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def simulation_sizes(figure: str, sim: pd.DataFrame, keys: list[str]) -> list[dict]:
    """Reported rows of the simulations' sizes: the smallest and largest D and the fewest runs
    of a simulated point (``keys``) at one D."""
    runs = sim.groupby([*keys, "D"], dropna=False).size()
    common = dict(figure=figure, location="App. D", verdict="reported")
    return [
        reading(claim="simulations", quantity="smallest D", measured=sim["D"].min(), **common),
        reading(claim="simulations", quantity="largest D", measured=sim["D"].max(), **common),
        reading(
            claim="simulations",
            quantity="runs per point and D (fewest)",
            measured=runs.min(),
            **common,
        ),
    ]


def agreement_readings(
    figure: str, check, unstable=None, label: str = "replicon-stable points"
) -> list[dict]:
    """Reported rows of an agreement check (:class:`~hdlora.harness.agreement.AgreementCheck`):
    comparisons, and the largest per-observable statistic against its threshold; the same for
    the replicon-unstable points when given."""
    rows = []
    for points, c in ((label, check), ("replicon ≥ 1 points", unstable)):
        if c is None:
            continue
        common = dict(figure=figure, claim=f"theory = simulation, {points}", location="§4")
        # the paper claims agreement where the replica-symmetric theory holds, not elsewhere
        verdict = ("holds" if c.passed else "fails") if c is check else "reported"
        rows.append(
            reading(
                quantity="comparisons",
                measured=c.n_compared,
                verdict=verdict,
                reason=f"check {'passed' if c.passed else 'failed'}",
                **common,
            )
        )
        if len(c.by_observable):
            obs = c.by_observable
            worst = obs.loc[obs["statistic"].abs().fillna(np.inf).idxmax()]
            rows.append(
                reading(
                    quantity=f"largest per-observable |statistic| ({worst['observable']})",
                    measured=abs(worst["statistic"]),
                    paper=math.nan,
                    verdict=verdict,
                    reason=f"threshold {worst['threshold']:.3g} ({worst['se_method']} se, "
                    f"{worst['dof']:.0f} dof)",
                    **common,
                )
            )
    return rows


def markers(name: str) -> tuple[str, str]:
    """The README's markers around the readings of ``name`` (e.g. ``fig1``)."""
    return f"<!-- readings:{name} -->", f"<!-- /readings:{name} -->"


def render_errata(table: pd.DataFrame, link: bool = False) -> str:
    """The errata of the paper (``data/errata.csv``: where, as printed, the verified form, the
    notebook that checks it) as a Markdown table; ``link``: the notebooks as links (the book)."""
    lines = ["| where | as printed | verified form | checked in |", "|---|---|---|---|"]
    for r in table.itertuples(index=False):
        nb = f"[`{r.notebook}`](notebooks/{r.notebook}.ipynb)" if link else f"`{r.notebook}`"
        lines.append(f"| {r.where} | {r.as_printed} | {r.verified} | {nb} |")
    return "\n".join(lines)


def render_blocks(text: str, data_dir: Path) -> str:
    """``text`` (the README) with every block between :func:`markers` replaced by the rendering
    of ``data_dir/<name>_readings.csv``, and the block between ``<!-- errata -->`` markers by
    :func:`render_errata` of ``data_dir/errata.csv``; a block whose table is missing raises."""
    for name in re.findall(r"<!-- readings:(\w+) -->", text):
        path = Path(data_dir) / f"{name}_readings.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the README shows the readings of {name}")
        block = render_markdown(pd.read_csv(path, keep_default_na=False, na_values=[""]))
        text = replace_between(text, *markers(name), f"\n{block}\n")
    if "<!-- errata -->" in text:
        errata = render_errata(pd.read_csv(Path(data_dir) / "errata.csv"))
        text = replace_between(text, "<!-- errata -->", "<!-- /errata -->", f"\n{errata}\n")
    return text
