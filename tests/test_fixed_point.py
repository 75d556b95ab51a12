import numpy as np
import pytest

from hdlora.diagnostics import ConvergenceWarning
from hdlora.theory.fixed_point import OutOfDomain, solve


def test_solves_a_scalar_fixed_point():
    r = solve(lambda x: np.cos(x), np.array([1.0]), tol=1e-12, progress=False)
    assert r.converged and r.x[0] == pytest.approx(0.7390851332151607, abs=1e-11)


def test_anderson_is_faster_than_damping_on_a_linear_map():
    A = np.array([[0.9, 0.05], [0.0, 0.8]])
    b = np.array([1.0, 2.0])
    exact = np.linalg.solve(np.eye(2) - A, b)
    fast = solve(lambda x: A @ x + b, np.zeros(2), tol=1e-10, memory=3, progress=False)
    slow = solve(
        lambda x: A @ x + b, np.zeros(2), tol=1e-10, memory=0, max_iter=2000, progress=False
    )
    assert fast.converged and slow.converged
    assert np.allclose(fast.x, exact, atol=1e-8)
    assert fast.n_iter < slow.n_iter / 5


def test_non_convergence_is_reported():
    with pytest.warns(ConvergenceWarning, match="did not converge: max_iter reached"):
        r = solve(lambda x: x + 1.0, np.zeros(1), max_iter=5, progress=False)
    assert not r.converged and r.n_iter == 5 and r.message == "max_iter reached"


def test_backtracks_out_of_the_domain():
    def G(x):
        if x[0] <= 0:
            raise OutOfDomain("x must be > 0")
        return np.sqrt(x) + 0.0 * x  # fixed point 1

    r = solve(G, np.array([4.0]), tol=1e-10, damping=1.0, memory=2, progress=False)
    assert r.converged and r.x[0] == pytest.approx(1.0, abs=1e-9)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tol"):
        solve(lambda x: x, np.zeros(1), tol=0)
    with pytest.raises(ValueError, match="damping"):
        solve(lambda x: x, np.zeros(1), damping=1.5)
