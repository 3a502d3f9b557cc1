import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _warm_relu_kernels():
    from numopt.relu._kernels import warmup
    warmup()
