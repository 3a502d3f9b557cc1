"""The convex two-layer ReLU training problem (Pilanci-Ergen reformulation, sampled patterns).

Non-convex model of width ``m`` with weight decay ``beta``:

.. math::

    \\min_{u_j, \\alpha_j} \\; \\ell\\Big(\\sum_j (X u_j)_+ \\alpha_j,\\; y\\Big)
        + \\frac{\\beta}{2} \\sum_j \\big(\\|u_j\\|_2^2 + \\alpha_j^2\\big).

Convex reformulation over ``P`` activation patterns :math:`D_i = \\mathrm{diag}(d_i)`,
:math:`e_i = 2 d_i - 1`:

.. math::

    \\min_{v_i, w_i} \\; \\ell\\Big(\\sum_{i=1}^P D_i X (v_i - w_i),\\; y\\Big)
        + \\beta \\sum_i \\big(\\|v_i\\|_2 + \\|w_i\\|_2\\big)
    \\quad \\text{s.t.}\\quad e_i \\circ X v_i \\ge 0,\\; e_i \\circ X w_i \\ge 0.

The patterns are *sampled*: :math:`d_i = 1[X h_i \\ge 0]` with :math:`h_i \\sim N(0, I)`,
deduplicated, all-zero patterns dropped. The sampled optimum is an upper bound of the exact one.

Adversarial (l_inf-robust) training, ``adversarial_eps = eps`` (a radius per input feature, or one for all;
the appended bias coordinate is never perturbed, :math:`\\|\\cdot\\|_{1,\\epsilon} = \\sum_j \\epsilon_j |\\cdot_j|`
with :math:`\\epsilon_{bias} = 0`). The robust cones

.. math::

    e_{ik} x_k^T v_i - \\|v_i\\|_{1,\\epsilon} \\ge 0, \\qquad e_{ik} x_k^T w_i - \\|w_i\\|_{1,\\epsilon} \\ge 0

say :math:`e_{ik}(x_k + \\delta)^T v_i \\ge 0` for every :math:`|\\delta_j| \\le \\epsilon_j`: the activation pattern
is frozen on each ball, so there the network is linear, :math:`f(x_k + \\delta) = \\hat y_k + \\delta^T c_k` with
:math:`c_k = \\sum_i d_{ik}(v_i - w_i)`, and the prediction ranges over exactly
:math:`[\\hat y_k - r_k, \\hat y_k + r_k]`, :math:`r_k = \\|c_k\\|_{1,\\epsilon}` (attained at
:math:`\\delta = \\pm\\epsilon \\circ \\mathrm{sign}(c_k)`). The worst-case loss per sample is then

* squared: :math:`\\max_{|t - \\hat y_k| \\le r_k} \\tfrac12 (t - y_k)^2 = \\tfrac12 (|\\hat y_k - y_k| + r_k)^2`
  (a convex parabola is largest at an end of the interval; exact, convex: square of a non-negative convex function);
* logistic, :math:`\\ell = \\log(1 + e^{2\\hat y}) - 2y\\hat y = \\log(1 + e^{-2 s \\hat y})` with :math:`s = 2y - 1`,
  decreasing in the margin :math:`s\\hat y`: worst case :math:`\\log(1 + e^{2 (r_k - s_k \\hat y_k)})`
  (margin shrunk by :math:`r_k`; convex: softplus is increasing and :math:`r_k - s_k\\hat y_k` convex).

The robust program (both losses are :math:`\\ell(r_k + h_k(\\hat y_k))` with :math:`\\ell` convex non-decreasing)
is the robust loss plus the same group penalty under the robust cones; ``eps = 0`` is the nominal program. It is
an upper bound of the robust training loss of the recovered network (exact at the optimum: cones hold).
"""
from __future__ import annotations

import numpy as np

from .._validation import (as_float_array, check_bool, check_choice, check_int, check_positive,
                           check_random_state)
from ..problems import Problem

__all__ = ["TwoLayerReLU", "sample_patterns", "refine_patterns", "LOSSES"]

LOSSES = ("squared", "logistic")
_MAX_ABS = 1e100                            # largest |X|, |y| accepted (see TwoLayerReLU.__init__)
ROBUST_LOSSES = ("squared", "logistic")   # losses with a derived worst-case (robust) form


def _distinct_columns(M, limit=None, seen=None):
    """Indices of the distinct non-zero columns of the boolean ``M``, in order, at most ``limit`` of them.

    ``seen`` (a set of column keys, updated) carries the columns taken before, across calls.
    """
    seen = set() if seen is None else seen
    keep = []
    for j in range(M.shape[1]):
        if limit is not None and len(keep) >= limit:
            break
        m = M[:, j]
        if m.any():
            key = np.packbits(m).tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(j)
    return keep


def sample_patterns(X, n_patterns, rng, *, max_rounds=20):
    """Sample ``n_patterns`` distinct non-zero activation patterns ``1[X h >= 0]``.

    Returns ``(Dmat, H)``: the ``n x P`` 0/1 float64 pattern matrix (``P <= n_patterns``; fewer when the
    arrangement has fewer distinct non-zero patterns reachable in ``max_rounds`` draws) and the
    ``d x P`` Gaussian directions that generated them. Patterns keep the order of their first draw,
    so a fixed ``rng`` gives bit-identical output.
    """
    n, d = X.shape
    cols, dirs, seen = [], [], set()
    for _ in range(max_rounds):
        need = n_patterns - len(cols)
        if need <= 0:
            break
        H = rng.standard_normal((d, need))
        masks = (X @ H) >= 0
        for j in _distinct_columns(masks, seen=seen):
            cols.append(masks[:, j])
            dirs.append(H[:, j])
    if not cols:
        raise ValueError("X produced no non-zero activation pattern; is X all zeros?")
    Dmat = np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float64)
    return Dmat, np.ascontiguousarray(np.stack(dirs, axis=1))


def refine_patterns(X, targets, Dmat, ridge=1.0, *, tol=1e-6, maxiter=1000):
    r"""Activation patterns learned by a convex *gated* ReLU fit: the cells the data asks for.

    The sampled program confines each neuron to the cell of a random hyperplane. This replaces the
    ``P`` sampled gates by ``P`` learned ones, by two convex steps:

    1. Kernel ridge regression of the targets on the gated-ReLU features :math:`D_i X` (every gate ``i``,
       no cone constraints): with :math:`K = (X X^T) \circ (D D^T) = M M^T`, :math:`M = [D_1 X \dots D_P X]`,
       :math:`\lambda = \text{ridge} \cdot \mathrm{tr}(K) / n` (scale-free) and
       :math:`A = (K + \lambda I)^{-1} T`, the fitted gated neurons are :math:`v_i^{(k)} = X^T (d_i \circ A_k)`.
    2. Each gate is replaced by the zero set of its fitted neuron, :math:`1[X v_i^{(k^*)} \ge 0]`, with
       :math:`k^*` the target (column of ``T``) whose neuron is largest; duplicates and empty patterns are
       dropped and the room left is refilled with the sampled patterns, in order.

    Step 1 is solved matrix-free by Jacobi-preconditioned conjugate gradients (SciPy's ``cg``): a product
    with ``K`` is ``M (M^T a)``, two pattern-masked passes over ``X`` (``O(n d P)``), so time and memory stay
    linear in ``n`` (no ``n x n`` matrix). The ridge bounds the conditioning, ``cond <= 1 + n / ridge``
    (``lambda_max(K) <= tr K``); measured 130-140 on breast_cancer and digits, 32-52 iterations to
    ``tol = 1e-6``, where the patterns equal those of the exact solve. A CG that stops at ``maxiter``
    still gives valid (if less tuned) patterns: any patterns define a valid convex program.

    The ReLU program is then solved on these patterns as on sampled ones (the equivalence with the
    recovered network is unchanged).

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Inputs *with* the bias column, if any (as ``TwoLayerReLU.X``).
    targets : ndarray, shape (n,) or (n, k)
        Real targets (``+-1`` for classes).
    Dmat : ndarray, shape (n, P)
        The sampled 0/1 patterns (the gates of step 1).
    ridge : float
        Relative ridge ``> 0``. Measured on breast_cancer and binary digits, 5-fold CV accuracy varied by
        less than 0.002 for ``ridge`` in [0.3, 3] (docs/relu.md).
    tol, maxiter : float, int
        Relative residual tolerance and iteration limit of the conjugate gradients (per target).

    Returns
    -------
    ndarray, shape (n, P'), float64 0/1, ``P' <= P``.
    """
    from scipy.sparse.linalg import LinearOperator, cg

    from ._kernels import masked_rowsum_single, masked_scale

    X = np.ascontiguousarray(X, dtype=np.float64)
    D = np.ascontiguousarray(Dmat, dtype=np.float64)
    T = np.asarray(targets, dtype=np.float64)
    T = T[:, None] if T.ndim == 1 else T
    n, P = D.shape
    diagK = np.einsum("ij,ij->i", X, X) * D.sum(axis=1)          # K_kk = ||x_k||^2 |{i: d_ik = 1}|
    lam = ridge * max(float(diagK.sum()), 1e-300) / n
    DA, XW = np.empty((n, P)), np.empty((n, P))

    def neurons(a):                                               # V = X^T (D o a): d x P, column i = v_i
        return X.T @ masked_scale(D, a, DA)

    def kernel_ridge(a):                                          # (K + lam I) a = M M^T a + lam a
        return masked_rowsum_single(np.matmul(X, neurons(a), out=XW), D) + lam * a

    Kop = LinearOperator((n, n), matvec=kernel_ridge, dtype=np.float64)
    jacobi = LinearOperator((n, n), matvec=lambda r: r / (diagK + lam), dtype=np.float64)
    V = np.stack([neurons(cg(Kop, T[:, j], rtol=tol, maxiter=maxiter, M=jacobi)[0]) for j in range(T.shape[1])])
    best = np.argmax(np.linalg.norm(V, axis=1), axis=0)                         # per gate, its largest neuron
    W = V[best, :, np.arange(P)].T                                              # d x P
    cand = np.hstack([(X @ W) >= 0, D.astype(bool)])                            # learned first, then sampled
    return np.ascontiguousarray(cand[:, _distinct_columns(cand, limit=P)], dtype=np.float64)


class TwoLayerReLU(Problem):
    """Convex training problem of a two-layer ReLU network with weight decay ``beta``.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_features)
        Training inputs (finite). Standardise the columns first (the estimators do).
    y : array_like, shape (n_samples,)
        Targets: real values for ``loss="squared"`` (use +-1 for classification), ``{0, 1}`` for
        ``loss="logistic"``.
    beta : float
        Weight decay (``beta >= 0``). It is the weight on ``sum_j (||u_j||^2 + alpha_j^2) / 2`` next to the
        *summed* loss, i.e. scikit-learn's ``alpha`` of ``MLPRegressor``.
    n_patterns : int
        Number of sampled activation patterns ``P`` (before deduplication).
    loss : {"squared", "logistic"}
        ``"squared"``: :math:`\\tfrac12\\|\\hat y - y\\|^2`. ``"logistic"``:
        :math:`\\sum_k \\log(1 + e^{2\\hat y_k}) - 2 y_k \\hat y_k`, i.e. ``P(y=1) = sigmoid(2 yhat)``.
    bias : bool
        Append a ones column to ``X`` (a hidden-layer bias). The bias is part of ``u_j`` and therefore
        **penalised** by the weight decay, as in the paper and its reference codes.
    adversarial_eps : float or array_like, shape (n_features,)
        Radius of the l_inf perturbation ball of the robust formulation (0: nominal training), one for every
        feature or one per feature (the bias coordinate is never perturbed). ``> 0`` makes :meth:`objective`
        the worst-case loss and :meth:`cone_violation` check the robust cones (module docstring);
        ``minimize(method="admm")`` then runs :func:`numopt.relu._robust.minimize_robust`.
    patterns : array_like of {0, 1}, shape (n_samples, P), optional
        Use these activation patterns instead of sampling (duplicates and all-zero columns are dropped).
    random_state : None, int or numpy Generator
        Seed of the pattern sampling.

    Attributes
    ----------
    X : ndarray, shape (n, d)
        The inputs with the bias column appended (``d = n_features + bias``), float64.
    Dmat : ndarray, shape (n, P)
        The 0/1 pattern matrix after deduplication (float64).
    n_patterns_ : int
        ``P`` after deduplication.
    """

    def __init__(self, X, y, beta, *, n_patterns=32, loss="squared", bias=True, adversarial_eps=0.0,
                 patterns=None, random_state=None):
        X = as_float_array(X, "X", ndim=2, dtype=np.float64, min_size=1)
        n, p = X.shape
        if n < 1 or p < 1:
            raise ValueError(f"X must be non-empty; got shape {X.shape}")
        y = as_float_array(y, "y", ndim=1, dtype=np.float64)
        if y.shape[0] != n:
            raise ValueError(f"y must have length {n} (rows of X); got {y.shape[0]}")
        # the solvers form X^T X and squared losses: beyond ~1e154 they overflow to inf / NaN
        for name, a in (("X", X), ("y", y)):
            if np.max(np.abs(a), initial=0.0) > _MAX_ABS:
                raise ValueError(f"{name} has entries beyond {_MAX_ABS:g} in magnitude (their squares overflow "
                                 f"float64); standardise {name}")
        self.beta = check_positive(beta, "beta", strict=False)
        self.loss = check_choice(loss, "loss", LOSSES)
        if self.loss == "logistic" and not np.all((y == 0) | (y == 1)):
            raise ValueError("y must hold only 0 and 1 for loss='logistic'")
        self.bias = check_bool(bias, "bias")
        self.n_features = p
        self.adversarial_eps, self.eps_weights = _check_eps(adversarial_eps, p, self.bias)
        if self.robust and self.loss not in ROBUST_LOSSES:
            raise ValueError(f"loss={self.loss!r} has no robust form; adversarial_eps > 0 needs loss in "
                             f"{ROBUST_LOSSES}")
        self.X = np.ascontiguousarray(np.hstack([X, np.ones((n, 1))]) if self.bias else X)
        self.y = y
        if patterns is not None:
            D = np.asarray(patterns)
            if D.ndim != 2 or D.shape[0] != n:
                raise ValueError(f"patterns must have shape ({n}, P); got {D.shape}")
            if D.dtype.kind not in "biuf" or not np.all((D == 0) | (D == 1)):
                raise ValueError("patterns must hold only 0 and 1")
            D = D.astype(bool)
            keep = _distinct_columns(D)
            if not keep:
                raise ValueError("patterns has no non-zero column")
            self.Dmat = np.ascontiguousarray(D[:, keep], dtype=np.float64)
            self.directions = None
            self.n_patterns = len(keep)
        else:
            self.n_patterns = check_int(n_patterns, "n_patterns", min_value=1)
            self.random_state = random_state
            rng = check_random_state(random_state)
            self.Dmat, self.directions = sample_patterns(self.X, self.n_patterns, rng)
        self._cache = {}  # factorizations keyed by (path, rho); shared by with_targets / with_beta copies

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def n_samples(self):
        return self.X.shape[0]

    @property
    def dim(self):
        """Columns of the (augmented) X: ``n_features + bias``."""
        return self.X.shape[1]

    @property
    def n_patterns_(self):
        return self.Dmat.shape[1]

    @property
    def robust(self):
        """True when some feature has a perturbation radius ``> 0``."""
        return bool(np.any(self.eps_weights > 0))

    # --- copies sharing data, patterns and factorizations ---------------------------------------------
    def _clone(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def with_beta(self, beta):
        """The same problem with another ``beta`` (patterns and cached factorizations are shared)."""
        new = self._clone()
        new.beta = check_positive(beta, "beta", strict=False)
        return new

    def with_targets(self, y, loss=None):
        """The same inputs and patterns with new targets (one-vs-rest reuses the factorization)."""
        new = self._clone()
        new.loss = self.loss if loss is None else check_choice(loss, "loss", LOSSES)
        y = as_float_array(y, "y", ndim=1, dtype=np.float64)
        if y.shape[0] != self.n_samples:
            raise ValueError(f"y must have length {self.n_samples}; got {y.shape[0]}")
        if new.loss == "logistic" and not np.all((y == 0) | (y == 1)):
            raise ValueError("y must hold only 0 and 1 for loss='logistic'")
        if new.robust and new.loss not in ROBUST_LOSSES:
            raise ValueError(f"loss={new.loss!r} has no robust form; adversarial_eps > 0 needs loss in {ROBUST_LOSSES}")
        new.y = y
        return new

    # --- the convex model ----------------------------------------------------------------------------
    def predict_convex(self, V, W):
        """``F(v, w) = sum_i D_i X (v_i - w_i)``; ``V``, ``W`` are ``d x P`` (column i = v_i)."""
        return np.einsum("ki,ki->k", self.Dmat, self.X @ (V - W))

    def loss_value(self, yhat):
        """The data-fit term at predictions ``yhat``."""
        if self.loss == "squared":
            r = yhat - self.y
            return 0.5 * float(r @ r)
        z = 2.0 * yhat
        return float(np.sum(np.logaddexp(0.0, z) - self.y * z))

    def loss_grad(self, yhat):
        """Gradient of the data-fit term in ``yhat``."""
        if self.loss == "squared":
            return yhat - self.y
        return 2.0 * _sigmoid(2.0 * yhat) - 2.0 * self.y

    def robust_radius(self, V, W):
        """``r_k = ||c_k||_{1,eps}``, ``c_k = sum_i d_ik (v_i - w_i)``: half-width of the prediction range on ball k."""
        return np.abs(self.Dmat @ (V - W).T) @ self.eps_weights

    def robust_loss_value(self, yhat, r):
        """Worst-case data-fit term given predictions ``yhat`` and radii ``r`` (``r = 0``: :meth:`loss_value`)."""
        if self.loss == "squared":
            a = np.abs(yhat - self.y) + r
            return 0.5 * float(a @ a)
        s = 2.0 * self.y - 1.0
        return float(np.sum(np.logaddexp(0.0, 2.0 * (r - s * yhat))))

    def objective(self, V, W):
        """The convex objective at ``(V, W)`` (``d x P`` each): robust (worst-case) loss when ``adversarial_eps > 0``.

        Cones are not checked here (see :meth:`cone_violation`).
        """
        if not self.robust:
            return self.nominal_objective(V, W)
        reg = np.linalg.norm(V, axis=0).sum() + np.linalg.norm(W, axis=0).sum()
        return self.robust_loss_value(self.predict_convex(V, W), self.robust_radius(V, W)) + self.beta * reg

    def nominal_objective(self, V, W):
        """The convex objective of the unperturbed data (``eps = 0``) at ``(V, W)``."""
        reg = np.linalg.norm(V, axis=0).sum() + np.linalg.norm(W, axis=0).sum()
        return self.loss_value(self.predict_convex(V, W)) + self.beta * reg

    def cone_violation(self, V, W):
        """``max_{i,k} (-e_ik x_k^T v_i + ||v_i||_{1,eps})_+`` over both families (0 when every cone holds)."""
        E = 2.0 * self.Dmat - 1.0
        lv, lw = self.eps_weights @ np.abs(V), self.eps_weights @ np.abs(W)
        return float(max(np.max(lv - E * (self.X @ V), initial=0.0), np.max(lw - E * (self.X @ W), initial=0.0)))

    def beta_max(self):
        """``max_i ||X^T (d_i o g0)||_2``, ``g0`` the loss gradient at zero prediction.

        For ``beta`` at or above it the zero network is optimal for the unconstrained (gated) program;
        with the cone constraints it is a safe upper bound of the smallest such ``beta``. It bounds the robust
        program too: its objective is ``>=`` the nominal one, equal at zero, over a smaller feasible set.
        """
        g0 = self.loss_grad(np.zeros(self.n_samples))
        return float(np.max(np.linalg.norm(self.X.T @ (self.Dmat * g0[:, None]), axis=0)))

    def network_from(self, V, W, tol=0.0):
        """Recover ReLU weights from the convex variables.

        Each block ``v_i`` with ``||v_i|| > tol`` gives a neuron ``u = v_i / sqrt(||v_i||)``,
        ``alpha = sqrt(||v_i||)``; each ``w_i`` the same with ``alpha = -sqrt(||w_i||)``, so that
        ``(beta/2)(||u||^2 + alpha^2) = beta ||v_i||`` and ``relu(X u) alpha = D_i X v_i`` wherever the
        cone ``e_i o X v_i >= 0`` holds. Returns ``(U, alpha)``: ``U`` is ``d x m`` (last row = bias
        weights when ``bias``), ``alpha`` has length ``m``. The recovery is the same for the robust program:
        the robust cones make ``sign(x^T u)`` constant on every ball ``||x - x_k||_inf <= eps``, so the network
        equals ``x^T c_k`` there and its worst case is the convex model's (:meth:`network_objective`).
        """
        nv, nw = np.linalg.norm(V, axis=0), np.linalg.norm(W, axis=0)
        iv, iw = np.flatnonzero(nv > tol), np.flatnonzero(nw > tol)
        U = np.hstack([V[:, iv] / np.sqrt(nv[iv]), W[:, iw] / np.sqrt(nw[iw])])
        alpha = np.concatenate([np.sqrt(nv[iv]), -np.sqrt(nw[iw])])
        return U, alpha

    def network_objective(self, U, alpha):
        """Non-convex objective ``l(relu(X U) alpha) + beta/2 (||U||_F^2 + ||alpha||^2)``.

        With ``adversarial_eps > 0`` the loss is the worst case over each ball *with the activations of x_k
        held fixed*: ``r_k = ||U diag(alpha) 1[X U > 0]_k||_{1,eps}``. That is the exact worst case whenever no
        neuron changes sign on the ball (true for a network recovered from robust-cone-feasible variables).
        """
        H = self.X @ U
        yhat = np.maximum(H, 0.0) @ alpha
        pen = 0.5 * self.beta * (float(np.sum(U * U)) + float(alpha @ alpha))
        if not self.robust:
            return self.loss_value(yhat) + pen
        r = np.abs((H > 0) @ (U * alpha).T) @ self.eps_weights       # n x d slopes c_k, weighted l1
        return self.robust_loss_value(yhat, r) + pen

    def unpack(self, x):
        """Split the flat solver vector ``x = [v_1..v_P, w_1..w_P]`` into ``d x P`` matrices ``V, W``."""
        P, d = self.n_patterns_, self.dim
        x = np.asarray(x, dtype=np.float64)
        return x[:P * d].reshape(P, d).T.copy(), x[P * d:].reshape(P, d).T.copy()

    @staticmethod
    def pack(V, W):
        return np.concatenate([V.T.ravel(), W.T.ravel()])

    def check_x0(self, x0):
        """Validate a warm start (flat ``2 P d`` vector) and return ``(V, W)`` or ``None``."""
        if x0 is None:
            return None
        x0 = as_float_array(x0, "x0", ndim=1, dtype=np.float64)
        size = 2 * self.n_patterns_ * self.dim
        if x0.shape[0] != size:
            raise ValueError(f"x0 must have length 2 * n_patterns * dim = {size}; got {x0.shape[0]}")
        return self.unpack(x0)


def _check_eps(eps, p, bias):
    """Validate ``adversarial_eps`` (scalar or one per feature); returns it and the length-``d`` weights
    (``0`` on the bias coordinate, which is never perturbed)."""
    if np.ndim(eps) == 0:
        eps = check_positive(eps.item() if isinstance(eps, np.ndarray) else eps, "adversarial_eps", strict=False)
        w = np.full(p, eps)
    else:
        w = as_float_array(eps, "adversarial_eps", ndim=1, dtype=np.float64, copy=True)
        if w.shape[0] != p:
            raise ValueError(f"adversarial_eps must be a scalar or have length n_features={p}; got {w.shape[0]}")
        if np.any(w < 0):
            raise ValueError("adversarial_eps must be >= 0")
        eps = w.copy()
    return eps, np.concatenate([w, [0.0]]) if bias else w


def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
