import pytest

from numopt.problems import TwoLayerReLU
from numopt.relu._cvx import cvxpy_solve

from ._data import make_data


@pytest.fixture(scope="session", autouse=True)
def _warm_relu_kernels():
    from numopt.relu._kernels import warmup
    warmup()


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_blas():
    # the relu tests multiply small matrices thousands of times; multi-threaded BLAS on a loaded 2-core
    # CI machine makes each tiny product orders of magnitude slower (measured), so use one thread here
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1):
        yield


# two small programs with their CVXPY optimum (the oracle of the ADMM and ADMM-RBCD tests)
@pytest.fixture(scope="module")
def small_sq():
    X, y = make_data(50, 3, seed=1, kind="sign")
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=10, random_state=0)
    return pr, cvxpy_solve(pr)


@pytest.fixture(scope="module")
def small_logistic():
    X, y = make_data(40, 2, seed=3, kind="binary")
    pr = TwoLayerReLU(X, y, 0.3, n_patterns=8, loss="logistic", random_state=1)
    return pr, cvxpy_solve(pr)
