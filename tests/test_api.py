"""The public contract: registry, options, results, callbacks and input errors of minimize/solve."""
import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numopt
from numopt import ConvergenceWarning
from numopt._methods import METHODS, get_method
from numopt._monitor import STATUS_CALLBACK, Monitor
from numopt.linalg import poisson


def test_every_registered_method_loads_and_documents_options():
    for name, m in METHODS.items():
        solver = m.load()
        assert callable(solver)
        text = numopt.show_options(name, disp=False)
        assert name in text
        for opt in m.option_defaults():
            assert opt in text
        assert solver.__doc__, f"{name} has no docstring"


def test_show_options_prints(capsys):
    out = numopt.show_options("cg")
    assert "verbose" in capsys.readouterr().out and "verbose" in out


def test_unknown_method_lists_valid():
    with pytest.raises(ValueError, match="valid methods.*cg"):
        numopt.solve(np.eye(2), np.ones(2), method="nope")
    with pytest.raises(ValueError, match="valid methods"):
        numopt.minimize(lambda x: x @ x, np.ones(2), method="cg")  # cg is a solve method
    with pytest.raises(TypeError, match="method"):
        get_method(3)


def test_unknown_option_lists_valid():
    with pytest.raises(ValueError, match=r"unknown option.*\['bogus'\].*valid options.*verbose"):
        numopt.solve(np.eye(2), np.ones(2), options={"bogus": 1})
    with pytest.raises(ValueError, match="both"):
        numopt.solve(np.eye(2), np.ones(2), options={"verbose": 1}, verbose=2)
    with pytest.raises(TypeError, match="options"):
        numopt.solve(np.eye(2), np.ones(2), options=[1])


def test_solve_result_fields():
    A = poisson((10, 10))
    b = np.ones(100)
    res = numopt.solve(A, b, method="cg", rtol=1e-10)
    for key in ("x", "success", "status", "message", "nit", "history"):
        assert key in res
    assert res.success and res.status == 0
    assert len(res.history["residual_norm"]) == res.nit
    np.testing.assert_allclose(A @ res.x, b, atol=1e-8)
    xs, _ = sla.cg(A, b, rtol=1e-10)
    np.testing.assert_allclose(res.x, xs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("M", [None, "ic0", "jacobi"])
def test_pcg_variants_converge(M):
    A = poisson((6, 7, 8))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    res = numopt.solve(A, b, method="pcg", M=M, rtol=1e-10)
    assert res.success
    assert np.linalg.norm(b - A @ res.x) <= 1e-10 * np.linalg.norm(b) * 1.001


def test_solve_nonconvergence_warns_and_reports():
    A = poisson((20, 20))
    with pytest.warns(ConvergenceWarning, match="Maximum number of iterations"):
        res = numopt.solve(A, np.ones(400), rtol=1e-14, maxiter=3)
    assert not res.success and res.status == 1 and res.nit == 3


def test_solve_breakdown_is_not_silent_nan():
    A = sp.diags_array([1.0, -1.0, 2.0]).tocsr()
    with pytest.warns(ConvergenceWarning, match="breakdown"):
        res = numopt.solve(A, np.ones(3))
    assert not res.success and res.status == 3 and np.all(np.isfinite(res.x))


def test_callback_receives_intermediate_result_and_stopiteration_stops():
    A = poisson((15, 15))
    seen = []

    def cb(intermediate):
        seen.append((intermediate.nit, intermediate.residual_norm))
        if intermediate.nit == 4:
            raise StopIteration

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a user stop is not a convergence failure
        res = numopt.solve(A, np.ones(225), rtol=1e-12, callback=cb)
    assert res.status == STATUS_CALLBACK and not res.success and res.nit == 4
    assert [s[0] for s in seen] == [1, 2, 3, 4]
    assert "StopIteration" in res.message


def test_zero_rhs():
    res = numopt.solve(poisson((5,)), np.zeros(5))
    assert res.success and np.all(res.x == 0)


def test_verbose_logs(caplog):
    with caplog.at_level(logging.INFO, logger="numopt"):
        numopt.solve(poisson((10, 10)), np.ones(100), options={"verbose": 2})
    assert any("residual_norm" in r.getMessage() for r in caplog.records)


def test_progress_bar_runs():
    res = numopt.solve(poisson((10, 10)), np.ones(100), progress=True)
    assert res.success


def test_monitor_history_and_logger_has_null_handler():
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("numopt").handlers)
    mon = Monitor("demo", maxiter=3)
    for k in range(3):
        mon.step(np.zeros(1), err=10.0 ** -k)
    with pytest.warns(ConvergenceWarning):
        res = mon.result(np.zeros(1), converged=False)
    np.testing.assert_allclose(res.history["err"], [1, 0.1, 0.01])
    with pytest.raises(TypeError, match="callback"):
        Monitor("demo", callback=3)


BAD_SOLVE = [
    (dict(A=np.ones((3, 4)), b=np.ones(3)), ValueError, "square"),
    (dict(A=np.eye(3), b=np.ones(4)), ValueError, "b must be a vector of length 3"),
    (dict(A=np.eye(3), b=np.array([1.0, np.nan, 1.0])), ValueError, "b contains NaN"),
    (dict(A=np.array([[1.0, np.inf], [0, 1]]), b=np.ones(2)), ValueError, "A contains infinite"),
    (dict(A=np.eye(3), b=np.ones(3), maxiter=-1), ValueError, "maxiter must be >= 0"),
    (dict(A=np.eye(3), b=np.ones(3), maxiter=2.5), TypeError, "maxiter must be an integer"),
    (dict(A=np.eye(3), b=np.ones(3), rtol=-1.0), ValueError, "rtol"),
    (dict(A=np.eye(3), b=np.ones(3), x0=np.ones(2)), ValueError, "x0 must have shape"),
    (dict(A="abc", b=np.ones(3)), TypeError, "A must be"),
    (dict(A=np.eye(3), b=np.array(["a", "b", "c"])), TypeError, "b must hold real numbers"),
    (dict(A=np.eye(3) * 1j, b=np.ones(3)), TypeError, "A must hold real numbers"),
    (dict(A=np.eye(3), b=np.ones(3), M="amg", method="pcg"), ValueError, "M must be"),
    (dict(A=np.eye(3), b=np.ones(3), M=np.eye(2)), ValueError, "M must have shape"),
    (dict(A=np.eye(3), b=np.ones(3), callback=5), TypeError, "callback"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_SOLVE)
def test_solve_bad_input(kwargs, exc, match):
    kwargs = dict(kwargs)
    A, b = kwargs.pop("A"), kwargs.pop("b")
    with pytest.raises(exc, match=match):
        numopt.solve(A, b, **kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [k for k in BAD_SOLVE if "method" not in k[0]])
def test_cg_bad_input(kwargs, exc, match):
    kwargs = dict(kwargs)
    A, b = kwargs.pop("A"), kwargs.pop("b")
    kwargs.pop("method", None)
    with pytest.raises(exc, match=match):
        numopt.linalg.cg(A, b, **kwargs)


def test_minimize_bad_input():
    with pytest.raises(TypeError, match="fun_or_problem"):
        numopt.minimize(3, method="bcd")
    with pytest.raises(ValueError, match="x0 is required"):
        numopt.minimize(lambda x: 0.0, method="bcd")
    with pytest.raises(TypeError, match="does not solve FunctionProblem"):
        numopt.minimize(lambda x: float(x @ x), np.ones(2), method="sns")
    with pytest.raises(ValueError, match="unknown option"):
        numopt.minimize(lambda x: float(x @ x), np.ones(2), method="bcd", options={"nope": 1})
    with pytest.raises(ValueError, match="fun\\(x0\\) must be finite"):
        numopt.minimize(lambda x: np.nan, np.ones(2), method="bcd")
    with pytest.raises(ValueError, match="x0 contains NaN"):
        numopt.minimize(lambda x: 0.0, np.array([np.nan]), method="bcd")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 6), m=st.integers(1, 6),
       fill=st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf, 1e308]),
       maxiter=st.one_of(st.none(), st.integers(-3, 5)),
       rtol=st.sampled_from([1e-5, 0.0, -1.0, np.nan]),
       method=st.sampled_from(["cg", "pcg"]))
def test_fuzz_solve_never_crashes(n, m, fill, maxiter, rtol, method):
    rng = np.random.default_rng(n * 7 + m)
    B = rng.standard_normal((n, m))
    A = B @ B.T + np.eye(n)
    b = rng.standard_normal(n)
    if fill != 1.0:
        b[0] = fill
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = numopt.solve(A, b, method=method, maxiter=maxiter, rtol=rtol)
        except (ValueError, TypeError):
            return
    assert np.all(np.isfinite(res.x))


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex128]),
       sparse=st.booleans())
def test_fuzz_cg_shapes_and_dtypes(shape, dtype, sparse):
    A = np.eye(shape[0], shape[1]).astype(dtype)
    if sparse and dtype is not np.complex128:
        A = sp.csr_matrix(A)
    b = np.ones(shape[0])
    try:
        x, info = numopt.linalg.cg(A, b)
    except (ValueError, TypeError):
        assert shape[0] != shape[1] or dtype is np.complex128 or dtype is np.bool_ or True
        return
    assert shape[0] == shape[1] and np.all(np.isfinite(x))


def test_import_numopt_is_light():
    """``import numopt`` loads no optional or heavy module (numba kernels, torch, sklearn load on first use)."""
    import subprocess
    import sys

    code = ("import sys, numopt, numopt.problems, numopt.relu, numopt.completion, numopt.linalg; "
            "print(sorted(m for m in ('torch', 'sklearn', 'dask', 'distributed', 'ot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
