r"""Training the DCDM network: Lanczos/Ritz training vectors and the scale-invariant loss.

Training data (Kaneda et al. 2023, brief section 2.4), generated on the fly, nothing on disk:

1. :math:`g \sim N(0, I)`, :math:`b_0 = A g \in \mathrm{range}(A)`;
2. ``m = n_ritz`` Lanczos steps from :math:`b_0/\|b_0\|` with full reorthogonalisation give
   :math:`Q_m` and the tridiagonal :math:`T_m`;
3. ``eigh(T_m)`` gives Ritz values :math:`\theta_i` (ascending) and Ritz vectors :math:`v_i = Q_m y_i`;
   those with :math:`\theta_i < 10^{-8}` (the null space) are dropped;
4. each sample is :math:`b = \sum_i c_i v_i / \|\cdot\|` with :math:`c_i \sim 9 N(0,1)` for the lowest
   :math:`m/2 + \Theta` Ritz vectors and :math:`c_i \sim N(0,1)` for the rest (:math:`\Theta = m/20` by default).

Loss (unsupervised, invariant to the scale of the output): with :math:`y = f_\theta(b)`,

.. math:: L(b) = \Big\| b - \frac{y^T b}{y^T A y} A y \Big\|_2^2,

the squared residual after one exact line search from 0 along :math:`y`; :math:`L = 0` iff
:math:`y \parallel A^{-1} b`.

The command line ``python -m numopt.linalg._dcdm_train --help`` trains and writes safetensors weights and a
JSON with the command, seed and time next to them (how the shipped weights were made).
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh_tridiagonal

from .._monitor import get_logger
from .._validation import as_operator, check_choice, check_int, check_positive, check_random_state
from ._poisson import poisson

__all__ = ["lanczos", "ritz_vectors", "sample_ritz_rhs", "dcdm_loss", "dcdm_train"]


# ----------------------------------------------------------------------------------------------------
# Lanczos / Ritz (NumPy)
# ----------------------------------------------------------------------------------------------------
def lanczos(A, m, v0):
    """``m`` Lanczos steps with full reorthogonalisation.

    The three-term recurrence, then classical Gram-Schmidt against every earlier Lanczos vector,
    applied twice ("twice is enough"; as accurate as modified Gram-Schmidt, but in BLAS-2).

    Parameters
    ----------
    A : ndarray, sparse matrix or LinearOperator, symmetric (n, n)
    m : int
        Number of steps (stops early at an invariant subspace).
    v0 : ndarray (n,)
        Start vector (normalised here).

    Returns
    -------
    Q : ndarray (k, n)
        Orthonormal Lanczos vectors as rows, ``k <= m``.
    alpha, beta : ndarray (k,), (k - 1,)
        Diagonal and off-diagonal of ``T_k = Q A Q^T``.
    """
    _, op = as_operator(A, "A")
    n = op.shape[0]
    m = check_int(m, "m", min_value=1)
    m = min(m, n)
    v = np.asarray(v0, dtype=np.float64).ravel()
    if v.shape != (n,):
        raise ValueError(f"v0 must have shape ({n},); got {v.shape}")
    nrm = np.linalg.norm(v)
    if not np.isfinite(nrm) or nrm == 0:
        raise ValueError("v0 must be finite and nonzero")
    Q = np.empty((m, n))
    alpha = np.empty(m)
    beta = np.empty(m)
    Q[0] = v / nrm
    k = m
    for j in range(m):
        w = np.asarray(op.matvec(Q[j]), dtype=np.float64).ravel()
        alpha[j] = Q[j] @ w
        w -= alpha[j] * Q[j]
        if j > 0:
            w -= beta[j - 1] * Q[j - 1]
        for _ in range(2):
            w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if j + 1 == m:
            break
        if beta[j] <= 1e-12 * max(abs(alpha[j]), 1.0):  # invariant subspace found
            k = j + 1
            break
        Q[j + 1] = w / beta[j]
    return Q[:k], alpha[:k].copy(), beta[:k - 1].copy()


def ritz_vectors(A, n_ritz, *, random_state=None, null_tol=1e-8):
    """Ritz pairs of ``A`` from ``n_ritz`` Lanczos steps started at ``A g`` (``g`` Gaussian).

    Returns
    -------
    theta : ndarray (k,)
        Ritz values, ascending, those below ``null_tol`` dropped.
    V : ndarray (n, k), float32
        Orthonormal Ritz vectors (columns).
    """
    _, op = as_operator(A, "A")
    rng = check_random_state(random_state)
    b0 = np.asarray(op.matvec(rng.standard_normal(op.shape[0])), dtype=np.float64).ravel()
    Q, alpha, beta = lanczos(op, n_ritz, b0)
    if len(alpha) == 1:
        theta, Y = alpha.copy(), np.ones((1, 1))
    else:
        theta, Y = eigh_tridiagonal(alpha, beta)
    keep = theta >= null_tol
    theta, Y = theta[keep], Y[:, keep]
    V = (Q.T @ Y).astype(np.float32)
    return theta, V


def sample_ritz_rhs(V, n_samples, *, n_low=None, low_scale=9.0, random_state=None):
    """Right-hand sides ``b = V c / ||V c||`` biased to the low Ritz vectors (columns of ``V``, ascending).

    ``c_i ~ low_scale * N(0, 1)`` for the first ``n_low`` columns, ``N(0, 1)`` for the rest.
    Returns ``(n_samples, n)`` float32.
    """
    rng = check_random_state(random_state)
    k = V.shape[1]
    if n_low is None:
        n_low = k // 2 + max(1, k // 20)
    n_low = min(int(n_low), k)
    c = rng.standard_normal((k, n_samples)).astype(np.float32)
    c[:n_low] *= low_scale
    B = (V @ c).T
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    return B


# ----------------------------------------------------------------------------------------------------
# torch parts
# ----------------------------------------------------------------------------------------------------
def _torch_sparse(A, device, dtype):
    import torch

    A = sp.coo_matrix(A)
    idx = torch.as_tensor(np.vstack([A.row, A.col]).astype(np.int64))
    val = torch.as_tensor(A.data, dtype=dtype)
    return torch.sparse_coo_tensor(idx, val, A.shape, device=device, check_invariants=False).coalesce()


def dcdm_loss(y, b, A):
    r"""Scale-invariant DCDM loss :math:`\frac1B\sum \| b - (y^Tb / y^TAy) A y \|^2`.

    Parameters
    ----------
    y, b : torch.Tensor (batch, n)
        Network outputs and inputs, flattened to the unknowns of ``A``.
    A : torch sparse (n, n) tensor, or a callable ``Y -> A Y`` on (n, batch) tensors
    """
    import torch

    Ay = torch.sparse.mm(A, y.T).T if isinstance(A, torch.Tensor) else A(y.T).T
    alpha = (y * b).sum(dim=1) / (y * Ay).sum(dim=1)
    res = b - alpha[:, None] * Ay
    return (res * res).sum(dim=1).mean()


class _Scene:
    """One training matrix: its grid, fluid cells, torch copy of A and Ritz basis."""

    def __init__(self, A, shape, fluid_mask, n_ritz, theta, rng, device, n_val):
        import torch

        self.shape = tuple(shape)
        self.fluid = np.flatnonzero(fluid_mask.ravel()) if fluid_mask is not None else None
        self.n = A.shape[0]
        self.ritz_values, V = ritz_vectors(A, n_ritz, random_state=rng)
        k = V.shape[1]
        self.n_low = min(k, k // 2 + (max(1, k // 20) if theta is None else int(theta)))
        self.V = torch.as_tensor(V, device=device)
        self.A = _torch_sparse(A, device, torch.float32)
        self.fluid_t = None if self.fluid is None else torch.as_tensor(self.fluid, device=device)
        self.val = torch.as_tensor(sample_ritz_rhs(V, n_val, n_low=self.n_low, random_state=rng), device=device)

    def sample(self, batch, gen):
        import torch

        c = torch.randn(self.V.shape[1], batch, generator=gen, device=self.V.device)
        c[:self.n_low] *= 9.0
        B = (self.V @ c).T
        return B / B.norm(dim=1, keepdim=True)

    def to_grid(self, B):
        import torch

        if self.fluid_t is None:
            return B.reshape((B.shape[0], 1) + self.shape)
        G = torch.zeros((B.shape[0], int(np.prod(self.shape))), dtype=B.dtype, device=B.device)
        G[:, self.fluid_t] = B
        return G.reshape((B.shape[0], 1) + self.shape)

    def from_grid(self, Y):
        Y = Y.reshape(Y.shape[0], -1)
        return Y if self.fluid_t is None else Y[:, self.fluid_t]

    def loss(self, model, B):
        return dcdm_loss(self.from_grid(model(self.to_grid(B))), B, self.A)


def _shapes(grid_shape):
    if np.isscalar(grid_shape):
        return [(check_int(grid_shape, "grid_shape", min_value=2),) * 3]
    gs = list(grid_shape)
    if gs and all(np.isscalar(g) for g in gs) and len(gs) == 3:
        return [tuple(check_int(g, "grid_shape", min_value=2) for g in gs)]
    out = []
    for g in gs:
        out.extend(_shapes(g))
    if not out:
        raise ValueError("grid_shape must be an int, a 3-tuple or a list of them")
    return out


def dcdm_train(grid_shape, obstacles=None, *, A=None, n_scenes=1, n_ritz=400, theta=None, epochs=10,
               steps_per_epoch=100, batch_size=10, lr=1e-4, arch="N64", width=16, model=None,
               obstacle_bc="dirichlet", n_val=10, device="cpu", seed=0, time_limit=None, schedule="constant",
               checkpoint=None, progress=False, verbose=False, threads=None):
    r"""Train a DCDM network on 3-D Poisson scenes with the scale-invariant loss (Adam).

    Parameters
    ----------
    grid_shape : int, 3-tuple, or list of them
        Grid(s) of the training scenes (cubes for ints). Random scenes are spread over the listed grids.
    obstacles : None, "random", bool array or list of bool arrays
        ``None``: the obstacle-free Dirichlet Laplacian; ``"random"``: ``n_scenes`` random box/sphere scenes
        per grid (:func:`numopt.linalg._scenes.random_obstacles`); arrays: these solid masks.
    A : sparse matrix, optional
        Train on this user matrix instead (one row per fluid cell of ``~obstacles``, or per grid cell when
        ``obstacles`` is None; ``grid_shape`` must then be one shape).
    n_scenes : int
        Random scenes per grid when ``obstacles="random"``.
    n_ritz : int
        Lanczos steps ``m`` per scene (200-1600 is practical on a CPU).
    theta : int, optional
        Extra low Ritz vectors weighted by 9 beyond ``m/2`` (default ``m/20``).
    epochs, steps_per_epoch, batch_size : int
        Each step draws ``batch_size`` fresh right-hand sides of one random scene.
    lr : float
        Adam learning rate (the paper: 1e-4).
    arch, width : network structure (see :class:`~numopt.linalg._dcdm_model.DCDMNet`); or pass ``model``.
    n_val : int
        Held-out right-hand sides per scene, never trained on; their loss is recorded each epoch and picks
        the checkpoint.
    device : str
    seed : int
    time_limit : float, optional
        Stop after this many seconds of training (the Lanczos set-up not included).
    schedule : {"constant", "cosine"}
        Learning rate schedule; ``"cosine"`` decays to ``0.02 lr`` over the steps (or ``time_limit``).
    checkpoint : str, optional
        ``.safetensors`` path: the best-validation weights are written there after every epoch.
    progress, verbose : bool
    threads : int, optional
        torch threads (default: capped CPU count).

    Returns
    -------
    model : DCDMNet
        In eval mode, with the best-validation weights.
    history : dict
        ``train_loss`` and ``val_loss`` per epoch, ``setup_time``, ``train_time``, ``steps``.
    """
    import torch

    from ._dcdm_model import DCDMNet, save_model, set_torch_threads
    from ._scenes import random_obstacles

    set_torch_threads(threads)
    log = get_logger("dcdm_train")
    shapes = _shapes(grid_shape)
    n_ritz = check_int(n_ritz, "n_ritz", min_value=2)
    epochs = check_int(epochs, "epochs", min_value=1)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    n_val = check_int(n_val, "n_val", min_value=1)
    lr = check_positive(lr, "lr")
    if time_limit is not None:
        time_limit = check_positive(time_limit, "time_limit")
    check_choice(schedule, "schedule", ("constant", "cosine"))
    rng = check_random_state(seed)
    torch.manual_seed(int(rng.integers(2**31)))
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(2**31)))

    t0 = time.perf_counter()
    specs = []  # (A, shape, fluid_mask)
    if A is not None:
        if len(shapes) != 1:
            raise ValueError("with a user matrix A, grid_shape must be a single shape")
        A, _ = as_operator(A, "A")
        if not sp.issparse(A):
            A = sp.csr_matrix(A)
        fluid = None
        if obstacles is not None:
            solid = np.asarray(obstacles, dtype=bool)
            if solid.shape != shapes[0]:
                raise ValueError(f"obstacles must have shape {shapes[0]}; got {solid.shape}")
            fluid = ~solid
        n_expect = int(np.prod(shapes[0])) if fluid is None else int(fluid.sum())
        if A.shape[0] != n_expect:
            raise ValueError(f"A has {A.shape[0]} rows but the grid has {n_expect} (fluid) cells")
        specs.append((A, shapes[0], fluid))
    elif obstacles is None:
        specs = [(poisson(s), s, None) for s in shapes]
    elif isinstance(obstacles, str):
        if obstacles != "random":
            raise ValueError(f"obstacles must be None, 'random' or boolean arrays; got {obstacles!r}")
        n_scenes = check_int(n_scenes, "n_scenes", min_value=1)
        for s in shapes:
            for _ in range(n_scenes):
                solid = random_obstacles(s, int(rng.integers(2, 7)), fill=float(rng.uniform(0.05, 0.25)),
                                         random_state=rng)
                specs.append((poisson(s, obstacles=solid, obstacle_bc=obstacle_bc), s, ~solid))
    else:
        masks = [obstacles] if isinstance(obstacles, np.ndarray) else list(obstacles)
        for solid in masks:
            solid = np.asarray(solid)
            if solid.dtype != bool or solid.ndim != 3:
                raise ValueError("obstacles arrays must be 3-D boolean grids")
            specs.append((poisson(solid.shape, obstacles=solid, obstacle_bc=obstacle_bc), solid.shape, ~solid))
    scenes = [_Scene(Ai, s, f, n_ritz, theta, rng, device, n_val) for Ai, s, f in specs]
    setup_time = time.perf_counter() - t0
    log.info("Ritz bases of %d scene(s) in %.1f s", len(scenes), setup_time)

    if model is None:
        model = DCDMNet(arch, width=width)
    model = model.to(device=device, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"train_loss": [], "val_loss": [], "epoch_time": []}
    best = (np.inf, None)
    t_start = time.perf_counter()
    steps = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * steps_per_epoch, desc="dcdm_train", leave=False)
    out_of_time = False
    for epoch in range(epochs):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            if schedule == "cosine":  # by steps or by time, whichever runs out first
                frac = steps / (epochs * steps_per_epoch)
                if time_limit is not None:
                    frac = max(frac, (time.perf_counter() - t_start) / time_limit)
                for g in opt.param_groups:
                    g["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0))))
            sc = scenes[int(rng.integers(len(scenes)))]
            loss = sc.loss(model, sc.sample(batch_size, gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3e}", refresh=False)
            if time_limit is not None and time.perf_counter() - t_start > time_limit:
                out_of_time = True
                break
        model.eval()
        with torch.no_grad():
            val = float(np.mean([float(sc.loss(model, sc.val)) for sc in scenes]))
        history["train_loss"].append(float(np.mean(losses)))
        history["val_loss"].append(val)
        history["epoch_time"].append(time.perf_counter() - t_start)
        if verbose:
            log.info("epoch %d  train %.4e  val %.4e  (%.0f s)", epoch + 1, history["train_loss"][-1], val,
                     history["epoch_time"][-1])
        if val < best[0]:
            best = (val, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if checkpoint is not None:
                save_model(model, checkpoint, metadata={"epoch": epoch + 1, "val_loss": val})
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    history.update(setup_time=setup_time, train_time=time.perf_counter() - t_start, steps=steps,
                   best_val_loss=best[0], n_scenes=len(scenes))
    return model, history


def main(argv=None):
    """Command line: train and write ``<out>.safetensors`` + ``<out>.json`` (command, seed, time, losses)."""
    import argparse
    import logging
    import platform

    import torch

    from ._dcdm_model import save_model

    p = argparse.ArgumentParser(prog="python -m numopt.linalg._dcdm_train", description=__doc__.split("\n")[0])
    p.add_argument("--grid", type=int, nargs="+", default=[16, 32], help="cube sides of the training grids")
    p.add_argument("--obstacles", default="random", choices=["random", "none"])
    p.add_argument("--n-scenes", type=int, default=6)
    p.add_argument("--n-ritz", type=int, default=400)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--arch", default="N64")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--time-limit", type=float, default=None, help="seconds of training")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--init", default=None, help="start from these weights (a .safetensors file)")
    p.add_argument("--out", required=True, help="output path without extension")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    init, previous = None, None
    if a.init is not None:
        from ._dcdm_model import load_model
        init = load_model(a.init)
        prev_json = os.path.splitext(a.init)[0] + ".json"
        if os.path.isfile(prev_json):
            with open(prev_json) as fh:
                previous = json.load(fh)
    model, hist = dcdm_train([(g,) * 3 for g in a.grid], None if a.obstacles == "none" else "random",
                             n_scenes=a.n_scenes, n_ritz=a.n_ritz, epochs=a.epochs,
                             steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size, lr=a.lr, arch=a.arch,
                             width=a.width, seed=a.seed, time_limit=a.time_limit, schedule=a.schedule,
                             threads=a.threads,
                             checkpoint=a.out + ".ckpt.safetensors", verbose=True, model=init)
    cmd = "python -m numopt.linalg._dcdm_train " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": cmd, "seed": a.seed, "wall_time_s": round(time.time() - t0, 1),
            "setup_time_s": round(hist["setup_time"], 1), "train_time_s": round(hist["train_time"], 1),
            "steps": hist["steps"], "best_val_loss": hist["best_val_loss"],
            "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "date_utc": time.strftime("%Y-%m-%dT%H:%MZ",
                                                                                          time.gmtime()),
            "config": model.config(), "train_loss": hist["train_loss"], "val_loss": hist["val_loss"]}
    if previous is not None:  # a continuation: keep the whole recipe
        meta["initialized_from"] = previous
        meta["total_train_time_s"] = round(meta["train_time_s"] + previous.get("total_train_time_s",
                                                                                previous.get("train_time_s", 0)), 1)
    save_model(model, a.out + ".safetensors", metadata={"command": cmd, "seed": a.seed})
    with open(a.out + ".json", "w") as fh:
        json.dump(meta, fh, indent=1)
    ckpt = a.out + ".ckpt.safetensors"
    if os.path.exists(ckpt):
        os.remove(ckpt)
    print(json.dumps({k: v for k, v in meta.items() if k not in ("train_loss", "val_loss")}, indent=1))


if __name__ == "__main__":
    main()
