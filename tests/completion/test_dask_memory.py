"""A data set larger than one worker's ``memory_limit`` is solved (two workers, blocks spilled to disk).

The workers' ``memory_limit`` is set below the total size of the observed-entry blocks, so no single
worker could hold Omega: the blocks are spread over both workers, and each worker keeps its managed
memory under the limit by spilling blocks to its local disk and reading them back when a half-step
needs them. The process-level ``pause``/``terminate`` thresholds are switched off because this CI-sized
limit is below the ~160 MiB an idle worker needs for NumPy/SciPy/Numba themselves.
"""
import logging
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from numopt.completion._altmin import gram_distance, minimize_altmin  # noqa: E402
from numopt.completion._dask import minimize_altmin_dask  # noqa: E402
from numopt.completion._dask_data import DaskMatrixCompletion  # noqa: E402
from numopt.exceptions import ConvergenceWarning  # noqa: E402
from numopt.problems import MatrixCompletion  # noqa: E402

LIMIT = 12 * 2**20


@pytest.fixture(scope="module")
def small_client(tmp_path_factory):
    import dask
    from distributed import Client, LocalCluster

    cfg = {"distributed.worker.memory.target": 0.5, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(cfg):
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, memory_limit=LIMIT,
                          dashboard_address=None, silence_logs=logging.ERROR,
                          local_directory=str(tmp_path_factory.mktemp("spill"))) as cluster, Client(cluster) as c:
            yield c


def _spilled(dask_worker):
    return len(dask_worker.data.slow), int(dask_worker.data.fast.total_weight)


def test_data_larger_than_a_worker_memory_limit(small_client, tmp_path):
    client = small_client
    rng = np.random.default_rng(0)
    m, n, k = 1500, 1200, 2
    Us, Vs = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    r, c = np.nonzero(rng.random((m, n)) < 0.4)
    vals = np.einsum("ij,ij->i", Us[r], Vs[c])
    prob = MatrixCompletion(r, c, vals, (m, n), k)
    paths = []
    for i, idx in enumerate(np.array_split(np.random.default_rng(1).permutation(r.size), 6)):
        paths.append(str(tmp_path / f"part{i}.npz"))
        np.savez(paths[-1], row=r[idx], col=c[idx], value=vals[idx])
    dprob = DaskMatrixCompletion(paths, (m, n), k, row_blocks=12, col_blocks=12)
    lay = dprob.layout(client)
    assert lay.nbytes > 1.5 * LIMIT            # Omega (CSR + CSC blocks) does not fit one worker's limit
    seen = []

    def watch(res):
        seen.append(client.run(_spilled))

    opts = dict(maxiter=2, random_state=0, solver="cholesky", n_power_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize_altmin(prob, **opts)
        got = minimize_altmin_dask(dprob, client=client, callback=watch, **opts)
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    d2, x2 = gram_distance(got.U, got.V, ref.U, ref.V)
    assert np.sqrt(d2 / x2) < 1e-8
    # both workers held blocks, and they kept their in-memory data under the limit by spilling to disk
    holders = {w for ws in client.who_has(lay.row_blocks + lay.col_blocks).values() for w in ws}
    assert len(holders) == 2
    assert max(s[0] for snap in seen for s in snap.values()) > 0
    assert max(s[1] for snap in seen for s in snap.values()) <= LIMIT
