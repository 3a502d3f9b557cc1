"""OptimalTransport: input handling (uniform defaults, zero masses, rescaling, dtype, conversions)."""
import numpy as np
import pytest

from numopt.problems import OptimalTransport


def test_uniform_defaults_and_reduction():
    M = np.arange(12.0).reshape(3, 4)
    p = OptimalTransport([], [], M, 0.5)
    np.testing.assert_allclose(p.a, np.ones(3) / 3)
    np.testing.assert_allclose(p.b, np.ones(4) / 4)
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.0, 0.5, 0.25, 0.25 + 1e-10])
    p = OptimalTransport(a, b, M, 0.5)
    np.testing.assert_array_equal(p.rows, [0, 2])
    np.testing.assert_array_equal(p.cols, [1, 2, 3])
    np.testing.assert_array_equal(p.M_red, M[np.ix_([0, 2], [1, 2, 3])])
    assert p.b_red.sum() == pytest.approx(p.a_red.sum(), abs=1e-16)   # rescaled exactly
    assert "OptimalTransport" in repr(p)


def test_potential_conversions_round_trip():
    M = np.random.default_rng(0).random((3, 4))
    p = OptimalTransport(np.array([0.5, 0.0, 0.5]), [], M, 0.25)
    log_u = np.array([0.3, -np.inf, -0.2])
    log_v = np.array([0.1, 0.2, 0.3, 0.4])
    x0 = p.from_log_potentials(log_u, log_v)
    lu, lv = p.log_potentials(x0)
    np.testing.assert_allclose(lu, log_u[[0, 2]])
    np.testing.assert_allclose(lv, log_v)
    assert OptimalTransport([], [], M, 0.25).dtype == np.float64
    assert OptimalTransport([], [], M.astype(np.float32), 0.25).dtype == np.float32
    assert OptimalTransport(np.ones(3) / 3, [], M.astype(np.float32), 0.25).dtype == np.float64
