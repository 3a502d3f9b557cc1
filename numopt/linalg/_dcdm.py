r"""Deep Conjugate Direction Method (Kaneda et al., ICML 2023).

Solve :math:`A x = b`, :math:`A` symmetric positive (semi)definite. A network :math:`f \approx c A^{-1}`
proposes a search direction from the normalised residual; the direction is A-orthogonalised against the
last ``k`` directions and an exact line search minimises the energy
:math:`\phi(x) = \tfrac12 x^TAx - b^Tx` along it::

    r = b - A x0
    for it = 1, 2, ...:
        q = f(r / ||r||)                              # network call (fp32), back to fp64
        for (p_j, Ap_j, d_j) newest first:             # modified Gram-Schmidt in the A inner product
            q -= (q^T Ap_j / d_j) p_j
        w = A q;  d = q^T w
        if q is degenerate or makes too little progress:
            q = M r (or r), orthogonalised the same way # a (preconditioned) CG step: the safeguard
        alpha = q^T r / d;  x += alpha q
        r = b - A x  (or r -= alpha w)
        push (q, w, d), keep the last k

With ``f = I`` this is CG, with a fixed SPD ``f = M`` it is PCG, with ``f = c A^{-1}`` it converges in one
iteration. The energy decreases by :math:`(q^Tr)^2 / (2 q^TAq) \ge 0` every iteration whatever ``f`` is.
"""
from __future__ import annotations

import functools
import time
import warnings
from collections import deque

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._monitor import Monitor, STATUS_CALLBACK
from .._validation import check_bool, check_choice, check_int, check_positive

__all__ = ["dcdm", "solve_dcdm", "DCDMDirections"]

_NET_DTYPES = ("float32", "float16", "bfloat16")


# ----------------------------------------------------------------------------------------------------
# direction generators
# ----------------------------------------------------------------------------------------------------
class DCDMDirections:
    """Map a residual vector to a search direction through a CNN on the grid.

    The residual (one entry per unknown, i.e. per fluid cell) is scattered onto ``grid_shape`` in C order
    (zeros in solid cells), cast to the network dtype, passed through the network under
    ``torch.inference_mode`` and gathered back to fp64.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (1, 1, N1, N2, N3) to the same shape.
    grid_shape : tuple of 3 ints
    fluid_mask : bool array of ``grid_shape``, optional
    device, dtype : torch device and dtype of the network.
    """

    def __init__(self, model, grid_shape, fluid_mask=None, *, device="cpu", dtype="float32"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        # channels-last 3-D layout: ~20% faster convs on CPU (oneDNN) and on GPU tensor cores
        self.model = model.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last_3d).eval()
        self.grid_shape = tuple(grid_shape)
        self.fluid = None if fluid_mask is None else np.flatnonzero(np.asarray(fluid_mask).ravel())
        self._grid = np.zeros(int(np.prod(self.grid_shape)), dtype=np.float32)

    def __call__(self, s):
        torch = self.torch
        if self.fluid is None:
            g = np.asarray(s, dtype=np.float32)
        else:
            g = self._grid
            g[self.fluid] = s
        t = torch.from_numpy(g.reshape((1, 1) + self.grid_shape)).to(device=self.device, dtype=self.dtype,
                                                                     memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            q = self.model(t)
        q = q.to(device="cpu", dtype=torch.float32).numpy().ravel().astype(np.float64)
        return q if self.fluid is None else q[self.fluid]


@functools.lru_cache(maxsize=4)
def _cached_model(path, device, dtype):
    from ._dcdm_model import load_model

    import torch

    return load_model(path, device=device, dtype=getattr(torch, dtype))


def _resolve_grid(n, grid_shape, fluid_mask):
    """Check ``grid_shape`` / ``fluid_mask`` against ``n`` unknowns; returns ``(shape, mask)``."""
    mask = None
    if fluid_mask is not None:
        mask = np.asarray(fluid_mask)
        if mask.dtype != bool:
            raise TypeError(f"fluid_mask must be a boolean array; got dtype {mask.dtype}")
        if mask.ndim != 3:
            raise ValueError(f"fluid_mask must be a 3-D boolean grid; got shape {mask.shape}")
        if grid_shape is None:
            grid_shape = mask.shape
    if grid_shape is None:
        return None, None
    if np.isscalar(grid_shape):
        grid_shape = (grid_shape,)
    try:
        grid_shape = tuple(check_int(s, "grid_shape", min_value=1) for s in grid_shape)
    except TypeError:
        raise TypeError(f"grid_shape must be a tuple of 3 ints; got {grid_shape!r}") from None
    if len(grid_shape) != 3:
        raise ValueError(f"grid_shape must have 3 entries (a 3-D grid); got {grid_shape}")
    if mask is not None:
        if mask.shape != grid_shape:
            raise ValueError(f"fluid_mask has shape {mask.shape} but grid_shape is {grid_shape}")
        n_fluid = int(mask.sum())
        if n_fluid != n:
            raise ValueError(f"fluid_mask has {n_fluid} fluid cells but A has {n} rows")
    elif int(np.prod(grid_shape)) != n:
        raise ValueError(f"grid_shape {grid_shape} has {int(np.prod(grid_shape))} cells but A has {n} rows "
                         "(pass fluid_mask when A only has rows for the fluid cells)")
    return grid_shape, mask


def _direction_generator(model, n, grid_shape, fluid_mask, device, net_dtype, diag, M=None):
    """Turn ``model`` into ``f(s) -> q`` on flat fp64 vectors; returns ``(f, name, uses_torch)``."""
    grid_shape, fluid_mask = _resolve_grid(n, grid_shape, fluid_mask)
    if model is None:
        if grid_shape is None and M is not None:  # no grid but a preconditioner: DCDM is then PCG
            return (lambda s: M.matvec(s)), "M", False
        if grid_shape is None:
            warnings.warn("dcdm: no grid_shape/fluid_mask, so the CNN cannot be used; falling back to "
                          "f = identity (plain CG directions). Pass grid_shape, or model='identity' / a callable.",
                          UserWarning, stacklevel=4)
            return (lambda s: s), "identity", False
        model = "pretrained"
    if isinstance(model, str):
        if model == "identity":
            return (lambda s: s), "identity", False
        if model == "jacobi":
            if diag is None:
                raise ValueError("model='jacobi' needs A as a matrix (its diagonal), not a LinearOperator")
            if np.any(diag <= 0):
                raise ValueError("model='jacobi' needs a positive diagonal; A is not SPD")
            inv = 1.0 / diag
            return (lambda s: inv * s), "jacobi", False
        if grid_shape is None:
            raise ValueError(f"model={model!r} is a CNN: grid_shape (or fluid_mask) is required to map the "
                             "unknowns onto the grid")
        path = None if model in ("pretrained", "default") else model
        if path is not None and not path.endswith((".safetensors", ".pt", ".pth")):
            raise ValueError(f"model must be 'pretrained', 'identity', 'jacobi', a weights path, a torch module or "
                             f"a callable; got {model!r}")
        net = _cached_model(path, str(device), net_dtype)
        f = DCDMDirections(net, grid_shape, fluid_mask, device=device, dtype=net_dtype)
        return f, ("pretrained" if path is None else path), True
    try:
        import torch
        is_module = isinstance(model, torch.nn.Module)
    except ImportError:  # torch is optional: callables work without it
        is_module = False
    if is_module:
        if grid_shape is None:
            raise ValueError("a torch model needs grid_shape (or fluid_mask) to map the unknowns onto the grid")
        return DCDMDirections(model, grid_shape, fluid_mask, device=device, dtype=net_dtype), "torch", True
    if isinstance(model, LinearOperator) or sp.issparse(model) or isinstance(model, np.ndarray):
        op = aslinearoperator(model)
        if op.shape != (n, n):
            raise ValueError(f"model as an operator must have shape ({n}, {n}); got {op.shape}")
        return (lambda s: op.matvec(s)), "operator", False
    if callable(model):
        return model, "callable", False
    raise TypeError(f"model must be None, a string, a torch module, a LinearOperator or a callable; "
                    f"got {type(model).__name__}")


def _norm_estimate(A, op, n_matvec):
    """An upper bound of ||A||_2: Gershgorin for matrices, 1.1 x 20 power steps for operators."""
    if sp.issparse(A):
        return float(abs(A).sum(axis=1).max()), 0
    if isinstance(A, np.ndarray):
        return float(np.abs(A).sum(axis=1).max()), 0
    v = np.random.default_rng(0).standard_normal(op.shape[0])
    lam = 0.0
    for _ in range(20):
        w = np.asarray(op.matvec(v), dtype=np.float64).ravel()
        lam = np.linalg.norm(w) / np.linalg.norm(v)
        if lam == 0 or not np.isfinite(lam):
            break
        v = w / np.linalg.norm(w)
    return 1.1 * lam, 20


def _check_symmetric(A):
    if sp.issparse(A):
        diff = abs(A - A.T)
        big = diff.max() if diff.nnz else 0.0
        scale = abs(A).max()
    elif isinstance(A, np.ndarray):
        big = np.abs(A - A.T).max()
        scale = np.abs(A).max()
    else:
        return
    if big > 1e-10 * max(scale, np.finfo(float).tiny):
        raise ValueError(f"A must be symmetric (positive definite); max |A - A^T| = {big:.3g}")


# ----------------------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------------------
def solve_dcdm(A, b, x0, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None, model=None,
               grid_shape=None, fluid_mask=None, n_directions=2, tol_mode="b", true_residual=True,
               min_progress=0.1, restart=False, orth_passes=1, device="cpu", net_dtype="float32", threads=None,
               verbose=False, progress=False):
    r"""Deep Conjugate Direction Method (``numopt.solve(A, b, method="dcdm")``).

    Each iteration feeds the normalised residual :math:`s = r/\|r\|` to a network
    :math:`f \approx c\,A^{-1}`, A-orthogonalises its output against the last ``n_directions`` directions
    (modified Gram-Schmidt), and takes the exact line search :math:`\alpha = q^Tr / q^TAq`. The energy
    :math:`\phi(x) = \tfrac12 x^TAx - b^Tx` decreases monotonically; the residual norm need not.

    **Safeguard.** A network direction is replaced by the (preconditioned) CG direction
    :math:`M r` (or :math:`r`), orthogonalised the same way, when it is degenerate
    (:math:`q^TAq \le 10^{-14}\|A\|\|q\|^2`, :math:`|q^Tr| \le 10^{-12}\|q\|\|r\|`, non-finite) or when its
    energy decrease :math:`(q^Tr)^2/q^TAq` is below ``min_progress`` :math:`\cdot\|r\|^2/\|A\|`.
    The unpreconditioned CG direction always passes that test (its decrease is at least steepest
    descent's, :math:`\ge \|r\|^2/\lambda_{max}`), so the solve converges wherever CG does, at worst at
    the steepest-descent rate.

    Parameters
    ----------
    A : ndarray, sparse matrix or LinearOperator (n, n)
        Symmetric positive definite (or semidefinite with a consistent ``b``).
    b : ndarray (n,)
    x0 : ndarray (n,) or None
    rtol, atol : float
        Stop when :math:`\|b - Ax\| \le \max(\mathrm{rtol}\,\|b\|, \mathrm{atol})` (SciPy), or with
        ``tol_mode="r0"`` when :math:`\|r\| \le \max(\mathrm{rtol}\,\|r_0\|, \mathrm{atol})` (the paper).
    maxiter : int, optional
        Default ``10 n`` (SciPy's ``cg``).
    M : LinearOperator, optional
        Preconditioner for the safeguard's fallback direction (default: the residual, a CG step).
    callback : callable, optional
        ``callback(intermediate_result)`` with ``x``, ``nit``, ``residual_norm``, ``network``, ``energy``;
        ``StopIteration`` ends the solve with the current iterate.

    Options
    -------
    model : None, "pretrained", "identity", "jacobi", path, torch.nn.Module, LinearOperator or callable
        The direction generator :math:`f`. ``None``: the shipped CNN when ``grid_shape``/``fluid_mask`` is
        given, else ``M`` when given (PCG), else the identity (CG, with a warning). A path loads
        ``.safetensors`` (or a weights-only ``.pt``); a torch module is run on the grid; a callable or
        operator gets flat fp64 vectors.
    grid_shape : tuple of 3 ints
        Grid of the unknowns (C order). Required for a CNN.
    fluid_mask : bool array of ``grid_shape``
        When A has rows only for the fluid cells: ``True`` where a cell is an unknown.
    n_directions : int
        Number ``k`` of stored directions (2 in the paper). A nonlinear network loses CG's global
        conjugacy; a longer window recovers part of it (measured with the shipped weights at 64³:
        136 iterations with k = 2, 85 with k = 8, 75 with k = 16 to 1e-6).
    tol_mode : {"b", "r0"}
    true_residual : bool
        Recompute :math:`r = b - Ax` every iteration (the paper; one extra SpMV) instead of
        :math:`r \leftarrow r - \alpha Aq`.
    min_progress : float
        Safeguard threshold (0 disables the progress test, keeping the degeneracy test).
    restart : bool
        Drop the stored directions whenever the safeguard fires.
    orth_passes : int
        Gram-Schmidt passes (2 helps for ``n_directions > 2``).
    device : str
        torch device of the network ("cpu", "cuda").
    net_dtype : {"float32", "float16", "bfloat16"}
        Network precision; the Krylov part is always float64.
    threads : int, optional
        torch CPU threads (default: capped CPU count).
    verbose, progress : bool

    Returns
    -------
    OptimizeResult
        ``x, success, status, message, nit, history`` (``residual_norm``, ``network``, ``energy``, ``time``)
        and ``n_network_calls``, ``n_matvec``, ``n_fallback``, ``network_time``, ``krylov_time``,
        ``device``, ``model``.
    """
    op = aslinearoperator(A)
    n = op.shape[0]
    n_directions = check_int(n_directions, "n_directions", min_value=1)
    orth_passes = check_int(orth_passes, "orth_passes", min_value=1)
    check_choice(tol_mode, "tol_mode", ("b", "r0"))
    check_choice(net_dtype, "net_dtype", _NET_DTYPES)
    true_residual = check_bool(true_residual, "true_residual")
    restart = check_bool(restart, "restart")
    min_progress = check_positive(min_progress, "min_progress", strict=False)
    if maxiter is None:
        maxiter = 10 * n
    if M is not None:
        M = aslinearoperator(M)
        if M.shape != (n, n):
            raise ValueError(f"M must have shape ({n}, {n}); got {M.shape}")
    _check_symmetric(A)
    diag = A.diagonal() if (sp.issparse(A) or isinstance(A, np.ndarray)) else None
    f, model_name, uses_torch = _direction_generator(model, n, grid_shape, fluid_mask, device, net_dtype, diag, M)
    if uses_torch:
        from ._dcdm_model import set_torch_threads
        set_torch_threads(threads)

    mon = Monitor("dcdm", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t_net = 0.0
    t_start = time.perf_counter()
    norm_A, n_matvec = _norm_estimate(A, op, 0)
    n_net = n_fallback = 0

    def matvec(v):
        nonlocal n_matvec
        n_matvec += 1
        return np.asarray(op.matvec(v), dtype=np.float64).ravel()

    b = np.asarray(b, dtype=np.float64)
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    nb = np.linalg.norm(b)

    def finish(x, converged, status=None):
        t_all = time.perf_counter() - t_start
        return mon.result(x, converged=converged, status=status, warn=True, n_network_calls=n_net,
                          n_matvec=n_matvec, n_fallback=n_fallback, network_time=t_net,
                          krylov_time=t_all - t_net, device=str(device) if uses_torch else "cpu",
                          model=model_name)

    if nb == 0:  # SciPy: b = 0 gives x = 0 whatever x0 is
        return finish(np.zeros(n), True)
    r = b - matvec(x) if x0 is not None else b.copy()
    rnorm = np.linalg.norm(r)
    thresh = max(rtol * (nb if tol_mode == "b" else rnorm), atol)
    if rnorm <= thresh:
        return finish(x, True)
    energy = -0.5 * x @ (b + r)
    stored = deque(maxlen=n_directions)  # (p, Ap, pAp), newest last

    def orthogonalize(q):
        for _ in range(orth_passes):
            for p, w, d in reversed(stored):  # newest first, modified Gram-Schmidt
                q -= (q @ w / d) * p
        return q

    converged = False
    for _ in range(maxiter):
        t0 = time.perf_counter()
        q = np.asarray(f(r / rnorm), dtype=np.float64).ravel()
        t_net += time.perf_counter() - t0
        n_net += 1
        from_net = True
        ok = q.shape == (n,) and np.all(np.isfinite(q))
        if ok:
            q = orthogonalize(q)
            w = matvec(q)
            d = q @ w
            qr = q @ r
            qq = q @ q
            ok = (d > 1e-14 * norm_A * qq and abs(qr) > 1e-12 * np.sqrt(qq) * rnorm
                  and qr * qr / d >= min_progress * rnorm * rnorm / norm_A)
        if not ok:  # safeguard: a (preconditioned) CG direction
            n_fallback += 1
            from_net = False
            if restart:
                stored.clear()
            q = orthogonalize(r.copy() if M is None else np.asarray(M.matvec(r), dtype=np.float64).ravel())
            w = matvec(q)
            d = q @ w
            qr = q @ r
            if not d > 0:
                if d < 0 or not np.isfinite(d):
                    raise ValueError(f"A is not positive definite: found a direction with q^T A q = {d:.3g}")
                return finish(x, False, status=3)  # q in null(A): an inconsistent singular system
        alpha = qr / d
        x += alpha * q
        energy -= 0.5 * qr * alpha
        r = b - matvec(x) if true_residual else r - alpha * w
        rnorm = np.linalg.norm(r)
        stored.append((q, w, d))
        if mon.step(x, residual_norm=rnorm, network=from_net, energy=energy):
            break
        if rnorm <= thresh:
            converged = True
            break
        if not np.isfinite(rnorm):
            return finish(x, False, status=3)
    return finish(x, converged)


def dcdm(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, model=None, grid_shape=None, fluid_mask=None,
         n_directions=2, callback=None, M=None, tol_mode="b", true_residual=True, min_progress=0.1,
         restart=False, orth_passes=1, device="cpu", net_dtype="float32", threads=None):
    r"""Solve :math:`Ax = b` by the Deep Conjugate Direction Method, with SciPy ``cg``'s interface.

    Same iteration and options as :func:`solve_dcdm` (``numopt.solve(A, b, method="dcdm")``), but returns
    ``(x, info)`` like :func:`scipy.sparse.linalg.cg`: ``info = 0`` on convergence, otherwise the number of
    iterations done; ``callback(xk)`` is called once per iteration with the current iterate. No
    warning is emitted on non-convergence (SciPy semantics); use :func:`numopt.solve` for the full record.

    Examples
    --------
    >>> import numopt.linalg as nl
    >>> A, b, fluid = nl.random_scene(16, random_state=0)
    >>> x, info = nl.dcdm(A, b, rtol=1e-6, fluid_mask=fluid)
    >>> info
    0
    """
    from .._solve import check_system

    if isinstance(atol, str) or atol is None:
        raise ValueError(f"atol must be a non-negative number; got {atol!r}")
    A, _, b, x0, rtol, atol, maxiter = check_system(A, b, x0, rtol, atol, maxiter)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    cb = None if callback is None else (lambda res: callback(res.x))
    with warnings.catch_warnings():
        from ..exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve_dcdm(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=cb, model=model,
                         grid_shape=grid_shape, fluid_mask=fluid_mask, n_directions=n_directions, tol_mode=tol_mode,
                         true_residual=true_residual, min_progress=min_progress, restart=restart,
                         orth_passes=orth_passes, device=device, net_dtype=net_dtype, threads=threads)
    info = 0 if res.success else max(res.nit, 1) if res.status != STATUS_CALLBACK else res.nit
    return res.x, info
