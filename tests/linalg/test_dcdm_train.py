"""DCDM training: Lanczos/Ritz generator, loss, gradients, a short training run, scenes."""
import numpy as np
import pytest
import scipy.sparse.linalg as spla

from numopt.linalg import plume_rhs, poisson, random_obstacles, random_scene
from numopt.linalg._dcdm_train import lanczos, ritz_vectors, sample_ritz_rhs


def dirichlet_eigs(N):
    j = np.arange(1, N + 1)
    lam1 = 2 - 2 * np.cos(np.pi * j / (N + 1))
    return np.sort((lam1[:, None, None] + lam1[None, :, None] + lam1[None, None, :]).ravel())


# --- oracle 6: Lanczos / Ritz -----------------------------------------------------------------------
def test_lanczos_orthonormal_and_tridiagonal():
    A = poisson((8, 8, 8))
    Q, alpha, beta = lanczos(A, 150, np.random.default_rng(0).standard_normal(512))
    assert Q.shape == (150, 512)
    np.testing.assert_allclose(Q @ Q.T, np.eye(150), atol=1e-10)
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    np.testing.assert_allclose(Q @ (A @ Q.T), T, atol=1e-9)


def test_ritz_values_in_spectrum_and_extremes():
    N = 8
    A = poisson((N, N, N))
    lam = dirichlet_eigs(N)
    theta, V = ritz_vectors(A, 200, random_state=1)
    assert V.dtype == np.float32 and V.shape == (512, len(theta))
    assert np.all(np.diff(theta) >= 0)
    assert theta[0] >= lam[0] * (1 - 1e-10) and theta[-1] <= lam[-1] * (1 + 1e-10)
    assert theta[0] == pytest.approx(lam[0], rel=1e-8)
    assert theta[-1] == pytest.approx(lam[-1], rel=1e-8)
    np.testing.assert_allclose(V.T @ V, np.eye(len(theta)), atol=1e-5)
    # Ritz pairs: small residuals for the extreme ones
    assert np.linalg.norm(A @ V[:, 0] - theta[0] * V[:, 0]) < 1e-4


def test_lanczos_stops_at_invariant_subspace():
    A = np.diag([1.0, 2.0, 3.0, 4.0, 5.0])
    Q, alpha, beta = lanczos(A, 5, np.array([1.0, 1.0, 0, 0, 0]))
    assert len(alpha) == 2
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))),
                               [1.0, 2.0])


def test_lanczos_bad_input():
    A = poisson((4, 4, 4))
    with pytest.raises(ValueError, match="v0"):
        lanczos(A, 10, np.zeros(64))
    with pytest.raises(ValueError, match="v0"):
        lanczos(A, 10, np.ones(5))
    with pytest.raises(ValueError, match="m"):
        lanczos(A, 0, np.ones(64))


def test_singular_matrix_null_space_dropped():
    # Neumann obstacles enclosing a fluid pocket make A singular; the Ritz data must stay in range(A)
    solid = np.zeros((8, 8, 8), dtype=bool)
    solid[2:7, 2:7, 2:7] = True
    solid[4, 4, 4] = False  # an enclosed fluid cell: a zero row/column in the Neumann matrix
    A = poisson((8, 8, 8), obstacles=solid, obstacle_bc="neumann")
    assert np.any(np.asarray(abs(A).sum(axis=1)).ravel() == 0)
    theta, V = ritz_vectors(A, 100, random_state=0)
    assert theta.min() >= 1e-8
    B = sample_ritz_rhs(V, 5, random_state=0)
    zero_rows = np.asarray(abs(A).sum(axis=1)).ravel() == 0
    assert np.abs(B[:, zero_rows]).max() < 1e-6
    np.testing.assert_allclose(np.linalg.norm(B, axis=1), 1, rtol=1e-5)


def test_sample_bias_to_low_modes():
    A = poisson((8, 8, 8))
    theta, V = ritz_vectors(A, 100, random_state=0)
    B = sample_ritz_rhs(V, 200, random_state=1).astype(np.float64)
    C = B @ V.astype(np.float64)  # coefficients in the Ritz basis
    k = V.shape[1]
    n_low = k // 2 + max(1, k // 20)
    ratio = np.sqrt((C[:, :n_low] ** 2).mean() / (C[:, n_low:] ** 2).mean())
    assert 7 < ratio < 11  # c_i ~ 9 N(0,1) on the low modes, N(0,1) above


# --- oracle 7: loss ---------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def _torch_A(A, dtype):
    from numopt.linalg._dcdm_train import _torch_sparse
    return _torch_sparse(A, "cpu", dtype)


def test_loss_zero_at_inverse_and_scale_invariant():
    from numopt.linalg._dcdm_train import dcdm_loss

    A = poisson((6, 6, 6))
    At = _torch_A(A, torch.float64)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((3, 216))
    y = np.vstack([spla.spsolve(A.tocsc(), bi) for bi in b])
    bt, yt = torch.tensor(b), torch.tensor(y)
    assert float(dcdm_loss(yt, bt, At)) < 1e-24
    z = torch.tensor(rng.standard_normal((3, 216)))
    l1 = float(dcdm_loss(z, bt, At))
    for c in (3.0, -0.01, 1e5):
        assert float(dcdm_loss(c * z, bt, At)) == pytest.approx(l1, rel=1e-12)
    # the loss is the squared residual after an exact line search from 0
    Az = (A @ z.numpy().T).T
    alpha = (z.numpy() * b).sum(1) / (z.numpy() * Az).sum(1)
    ref = np.mean(np.sum((b - alpha[:, None] * Az) ** 2, axis=1))
    assert l1 == pytest.approx(ref, rel=1e-12)


def test_loss_gradcheck_through_network():
    from numopt.linalg._dcdm_model import DCDMNet
    from numopt.linalg._dcdm_train import dcdm_loss

    N = 4
    A = poisson((N, N, N))
    At = _torch_A(A, torch.float64)
    net = DCDMNet((1, 1, 1), width=2).double()
    b = torch.randn(2, N ** 3, dtype=torch.float64)

    def f(b):
        return dcdm_loss(net(b.reshape(2, 1, N, N, N)).reshape(2, -1), b, At)

    assert torch.autograd.gradcheck(f, (b.requires_grad_(),), eps=1e-6, atol=1e-5)
    # and with respect to the weights
    w = net.out.weight
    g = torch.autograd.grad(f(b.detach()), w)[0]
    with torch.no_grad():
        e = torch.zeros_like(w)
        e.view(-1)[0] = 1e-6
        w += e
        lp = f(b.detach())
        w -= 2 * e
        lm = f(b.detach())
        w += e
    assert float(g.view(-1)[0]) == pytest.approx(float((lp - lm) / 2e-6), rel=1e-4, abs=1e-9)


def test_short_training_reduces_loss(tmp_path):
    from numopt.linalg import dcdm_train
    from numopt.linalg._dcdm_model import load_model

    ckpt = str(tmp_path / "ck.safetensors")
    model, hist = dcdm_train((8, 8, 8), "random", n_scenes=2, n_ritz=60, epochs=4, steps_per_epoch=10,
                             batch_size=4, lr=3e-3, arch=(1, 1, 1), width=4, seed=0, checkpoint=ckpt, threads=1)
    assert len(hist["val_loss"]) == 4 and hist["steps"] == 40
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert hist["best_val_loss"] == min(hist["val_loss"])
    back = load_model(ckpt)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.inference_mode():
        np.testing.assert_allclose(back(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)


def test_training_on_user_matrix_and_time_limit():
    from numopt.linalg import dcdm_train

    solid = random_obstacles(8, 2, random_state=0)
    A = poisson((8, 8, 8), obstacles=solid)
    model, hist = dcdm_train((8, 8, 8), solid, A=A, n_ritz=40, epochs=100, steps_per_epoch=5, batch_size=2,
                             arch=(0, 1, 0), width=2, time_limit=0.5, threads=1)
    assert hist["steps"] < 500
    with pytest.raises(ValueError, match="rows"):
        dcdm_train((8, 8, 8), None, A=A, n_ritz=10, epochs=1)
    with pytest.raises(ValueError, match="obstacles"):
        dcdm_train((8, 8, 8), "boxes", n_ritz=10, epochs=1)
    with pytest.raises(ValueError, match="n_ritz"):
        dcdm_train((8, 8, 8), n_ritz=1, epochs=1)
    with pytest.raises(ValueError, match="schedule"):
        dcdm_train((8, 8, 8), n_ritz=10, epochs=1, schedule="step")


# --- scenes ---------------------------------------------------------------------------------------------
def test_random_obstacles_properties():
    solid = random_obstacles(16, 5, fill=0.2, random_state=0)
    assert solid.shape == (16, 16, 16) and solid.dtype == bool
    assert 0.02 < solid.mean() < 0.4
    assert not solid[0].any() and not solid[-1].any() and not solid[:, :, 0].any()
    assert np.array_equal(solid, random_obstacles(16, 5, fill=0.2, random_state=0))
    assert not np.array_equal(solid, random_obstacles(16, 5, fill=0.2, random_state=1))
    assert not random_obstacles((8, 9, 10), 0).any()
    for bad in [dict(fill=0.95), dict(kinds=("cone",)), dict(n_obstacles=-1)]:
        with pytest.raises(ValueError):
            random_obstacles(8, **{"n_obstacles": 2, **bad})


def test_plume_rhs_and_scene():
    A, b, fluid = random_scene(16, random_state=4)
    assert A.shape == (fluid.sum(), fluid.sum()) and b.shape == (fluid.sum(),)
    assert np.linalg.norm(b) == pytest.approx(1.0)
    # plume rhs are smooth: more weight on low modes than a random vector, so CG needs more iterations
    rnd = np.random.default_rng(0).standard_normal(b.shape)
    counts = []
    for v in (b, rnd):
        c = [0]
        spla.cg(A, v, rtol=1e-6, callback=lambda xk: c.__setitem__(0, c[0] + 1))
        counts.append(c[0])
    assert counts[0] > counts[1]
    with pytest.raises(ValueError, match="solid"):
        plume_rhs(8, np.zeros((8, 8, 9), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        plume_rhs((8, 8))


def test_cli_writes_weights_and_recipe(tmp_path, capsys):
    import json

    from numopt.linalg._dcdm_model import load_model
    from numopt.linalg._dcdm_train import main

    out = str(tmp_path / "w")
    main(["--grid", "8", "--n-scenes", "1", "--n-ritz", "20", "--epochs", "2", "--steps-per-epoch", "2",
          "--batch-size", "2", "--width", "2", "--seed", "3", "--threads", "1", "--out", out])
    meta = json.load(open(out + ".json"))
    assert meta["seed"] == 3 and meta["steps"] == 4 and "--n-ritz 20" in meta["command"]
    assert load_model(out + ".safetensors").width == 2
    # continuing from those weights keeps the recipe chain
    main(["--grid", "8", "--n-scenes", "1", "--n-ritz", "20", "--epochs", "1", "--steps-per-epoch", "1",
          "--batch-size", "2", "--width", "2", "--threads", "1", "--init", out + ".safetensors", "--out", out + "2"])
    meta2 = json.load(open(out + "2.json"))
    assert meta2["initialized_from"]["seed"] == 3
