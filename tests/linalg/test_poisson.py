"""The Poisson generator against PyAMG's gallery and its closed-form spectrum."""
import numpy as np
import pytest

from numopt.linalg import poisson


@pytest.mark.parametrize("shape", [(7,), (5, 6), (3, 4, 5)])
def test_matches_pyamg(shape):
    pyamg = pytest.importorskip("pyamg")
    A = poisson(shape)
    B = pyamg.gallery.poisson(shape, format="csr")
    assert abs(A - B).max() == 0


def test_closed_form_eigenvalues():
    N = (4, 5, 3)
    A = poisson(N).toarray()
    lam = np.sort(np.linalg.eigvalsh(A))
    grids = np.meshgrid(*[2 - 2 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) for n in N], indexing="ij")
    ref = np.sort(sum(grids).ravel())
    np.testing.assert_allclose(lam, ref, atol=1e-12)


def test_obstacles_remove_cells():
    solid = np.zeros((6, 6, 6), bool)
    solid[2:4, 2:4, 2:4] = True
    A = poisson(solid.shape, obstacles=solid)
    assert A.shape == (216 - 8, 216 - 8)
    full = poisson(solid.shape).toarray()
    keep = ~solid.ravel()
    np.testing.assert_array_equal(A.toarray(), full[np.ix_(keep, keep)])
    An = poisson(solid.shape, obstacles=solid, obstacle_bc="neumann")
    # a fluid cell next to the solid block loses one unit of diagonal per solid face
    assert An.diagonal().min() == 5.0 and np.all(np.linalg.eigvalsh(An.toarray()) > 0)


def test_float32():
    assert poisson((4, 4), dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("bad,exc", [((0, 3), ValueError), ((2, 2, 2, 2), ValueError), ((2.5,), TypeError)])
def test_bad_shapes(bad, exc):
    with pytest.raises(exc, match="shape"):
        poisson(bad)


def test_bad_obstacles():
    with pytest.raises(ValueError, match="obstacles"):
        poisson((3, 3), obstacles=np.zeros((3, 4), bool))
    with pytest.raises(TypeError, match="obstacles"):
        poisson((3, 3), obstacles=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="every cell"):
        poisson((3, 3), obstacles=np.ones((3, 3), bool))
