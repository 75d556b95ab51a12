"""The figures' shared marks (hdlora.harness.plots): the legend has an entry for every kind of
mark drawn and none for a kind not drawn; the simulations' entry names their D and runs as the
table says."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hdlora.harness.plots import Legend, draw_curve, draw_simulation, simulation_text  # noqa: E402


def _labels(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_every_kind_drawn_has_an_entry_and_no_other():
    fig, ax = plt.subplots(layout="constrained")
    legend = Legend("simulation, D = 50, 3 runs: mean ± se")
    x = np.arange(5.0)
    draw_curve(ax, x, x, [True, True, False, True, True], color="C0", label="a", legend=legend)
    draw_curve(ax, x, 2 * x, color="C1", label="b", legend=legend)
    draw_simulation(ax, [1.0], [1.0], [0.1], color="C0", legend=legend)
    legend.draw(fig)
    labels = _labels(fig)
    assert labels[:2] == ["a", "b"]
    assert "theory (state evolution)" in labels
    assert "simulation, D = 50, 3 runs: mean ± se" in labels
    assert any("replicon ≥ 1" in t for t in labels)
    assert not any("not converged" in t for t in labels)
    plt.close(fig)

    fig, ax = plt.subplots(layout="constrained")
    legend = Legend()
    draw_curve(ax, x, x, None, [True, False, True, True, True], label="c", legend=legend)
    legend.draw(fig)
    labels = _labels(fig)
    assert any("not converged" in t for t in labels)
    assert not any("replicon" in t for t in labels) and not any("simulation" in t for t in labels)
    plt.close(fig)


def test_the_simulations_entry_counts_runs_per_point_and_names_every_D():
    sim = pd.DataFrame(
        {
            "lam": [0.1, 0.1, 0.1, 1.0, 1.0, 0.1],
            "D": [100, 100, 100, 100, 100, 200],
            "seed": [0, 1, 2, 0, 1, 0],
        }
    )
    assert simulation_text(sim, ["lam"]) == "simulation, D = 100, 200, 1–3 runs: mean ± se"
    one = sim.iloc[[5]]
    assert simulation_text(one, ["lam"]) == "simulation, D = 200, 1 run: mean ± se"


def test_the_line_is_broken_at_a_point_that_did_not_converge():
    fig, ax = plt.subplots()
    x = np.arange(5.0)
    line = draw_curve(ax, x, x, None, [True, True, False, True, True])
    assert np.isnan(line.get_ydata()[2]) and np.isfinite(np.delete(line.get_ydata(), 2)).all()
    plt.close(fig)
