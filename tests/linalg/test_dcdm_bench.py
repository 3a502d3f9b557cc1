"""The DCDM ratio script runs end to end on a tiny grid and reports every method converged."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("pyamg")


def test_bench_script_tiny(capsys):
    from numopt.bench.dcdm import _ic0, main
    from numopt.linalg import poisson
    import numpy as np

    assert main(["--sizes", "8", "--rtols", "1e-4", "1e-6", "--amg", "rs", "--n-directions", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert "device: CPU" in out and "DCDM k=2" in out and "DCDM k=4" in out and "IC(0)-PCG" in out
    assert "| NO |" not in out
    # the bench's fallback IC(0): exact for a tridiagonal matrix (no fill-in to drop)
    A = poisson(30)
    x = _ic0(A).matvec(np.ones(30))
    np.testing.assert_allclose(A @ x, np.ones(30), atol=1e-12)
