"""Warm the BCD Numba kernels once per test session (loads them from the on-disk cache)."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _warm_bcd_kernels():
    from numopt.bcd._kernels import warmup
    warmup()
