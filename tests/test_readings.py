"""The readings as data (hdlora.harness.readings): one row per claim, rendered into the README
between markers; the committed README shows exactly what the committed tables say."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hdlora.harness.readings import (
    VERDICTS,
    format_value,
    reading,
    readings_table,
    render_blocks,
    render_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
FIGURES = [f"fig{k}" for k in range(1, 7)]


def test_values_carry_the_digits_their_standard_error_allows():
    assert format_value(0.33612, 0.0083) == "0.3361 ± 0.0083"
    assert format_value(0.33612, 0.02) == "0.336 ± 0.020"
    assert format_value(12.3456, 1.5) == "12.3 ± 1.5"
    assert format_value(0.0439824) == "0.04398"
    assert format_value(math.nan) == "—"


def test_a_reading_names_a_bad_verdict():
    with pytest.raises(ValueError, match="verdict"):
        reading(figure="f", claim="c", location="l", quantity="q", measured=1.0, verdict="ok")


def test_render_blocks_replaces_only_the_marked_block(tmp_path):
    row = reading(
        figure="figX",
        claim="a | b",
        location="§4",
        quantity="q",
        measured=0.5,
        se=0.01,
        paper=0.4,
        verdict="fails",
        reason="r",
    )
    readings_table([row]).to_csv(tmp_path / "figX_readings.csv", index=False)
    text = "before\n<!-- readings:figX -->\nold\n<!-- /readings:figX -->\nafter\n"
    out = render_blocks(text, tmp_path)
    assert out.startswith("before\n<!-- readings:figX -->\n| claim")
    assert "| a \\| b (§4) | q | 0.500 ± 0.010 | 0.4 | fails | r |" in out
    assert "old" not in out and out.endswith("<!-- /readings:figX -->\nafter\n")
    assert render_blocks(out, tmp_path) == out
    with pytest.raises(FileNotFoundError, match="figY"):
        render_blocks("<!-- readings:figY -->\n<!-- /readings:figY -->", tmp_path)


def test_the_readme_shows_the_committed_readings():
    """No number of the README's figure notes is typed: each block is the rendering of the
    committed table (`python tools/readings.py` rewrites them)."""
    text = (ROOT / "README.md").read_text()
    for name in FIGURES:
        assert f"<!-- readings:{name} -->" in text, name
    assert render_blocks(text, ROOT / "data") == text


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_checks_three_claims_of_the_paper(name):
    table = pd.read_csv(ROOT / "data" / f"{name}_readings.csv")
    assert set(table["verdict"]) <= set(VERDICTS)
    claims = table[table["verdict"] != "reported"]
    assert len(claims) >= 3, claims
    assert table["measured"].notna().all()
    assert render_markdown(table).count("\n") == len(table) + 1


def test_the_errata_live_in_one_table():
    """data/errata.csv is rendered into the README (between markers) and into the book's index
    (book/stage.py fills its placeholder): neither holds a typed copy."""
    table = pd.read_csv(ROOT / "data" / "errata.csv")
    assert len(table) >= 6 and table.notna().all().all()
    readme = (ROOT / "README.md").read_text()
    assert "<!-- errata -->" in readme and render_blocks(readme, ROOT / "data") == readme
    index = (ROOT / "book" / "index.md").read_text()
    assert "<!-- hdlora:errata -->" in index and "| eq. (" not in index


def _curve_sizes(df, keys, x):
    return df.groupby(keys, dropna=False)[x].nunique()


def test_the_committed_figures_draw_dense_theory_curves():
    """Issue 22: the quick profile's curves carry >= 20 theory points (insets >= 10), so that
    their optima can be located rather than read off a grid."""
    fig1 = pd.read_csv(ROOT / "data" / "fig1.csv")
    main = fig1[(fig1["source"] == "theory") & (fig1["role"] == "main")]
    assert (_curve_sizes(main[np.isfinite(main["lam"])], ["Delta", "lam_ft"], "lam") >= 20).all()
    inset = fig1[fig1["role"] == "inset"]
    assert (_curve_sizes(inset, ["Delta"], "lam_ft") >= 10).all()
    fig3 = pd.read_csv(ROOT / "data" / "fig3.csv")
    assert (_curve_sizes(fig3[fig3["source"] == "theory"], ["lam_ft"], "lam") >= 20).all()
    drawn = {"fig2": None, "fig4": ["best_lam_ft"], "fig5": ["main", "Delta_check"]}
    for name, panels in drawn.items():
        df = pd.read_csv(ROOT / "data" / f"{name}.csv")
        th = df[(df["source"] == "theory") & (df["panel"].isin(panels) if panels else True)]
        keys = [
            k for k in ("panel", "alpha_ft", "rho", "selection") if k in th and th[k].notna().any()
        ]
        assert (_curve_sizes(th, keys, "Delta_eff") >= 20).all(), name
    fig6 = pd.read_csv(ROOT / "data" / "fig6.csv")
    left = fig6[(fig6["panel"] == "left") & (fig6["beta"] != 1.0)]
    assert (_curve_sizes(left, ["lam"], "beta_scale") >= 20).all()
    right = fig6[(fig6["panel"] == "right") & (fig6["source"] == "theory")]
    assert (_curve_sizes(right, ["beta_scale"], "lam_ft") >= 20).all()
