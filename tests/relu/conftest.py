import pytest


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
