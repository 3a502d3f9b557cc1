"""Problems solved by greedy block coordinate descent (``method="bcd"``).

Each problem is a *datafit* composed with a separable *penalty*, in the style of skglm:

.. math::

    F(x) = \\sum_k \\phi_k\\big((Ax)_k\\big) + \\tfrac{\\ell_2}{2}\\|x\\|^2 + \\sum_i \\psi_i(x_i),
    \\qquad \\psi_i(x_i) = \\ell_1 |x_i| \\;\\text{or}\\; \\ell_1 x_i + \\iota\\{x_i \\ge 0\\}.

The losses are **sums** over samples (the paper's scaling): scikit-learn's ``Lasso(alpha)`` is
``LeastSquares(A, b, l1=n * alpha)`` and ``LogisticRegression(C=C, penalty="l1")`` is
``Logistic(A, y, l1=1 / C)``.

The datafit objects (``_Squared``, ``_Logistic``, ``_Softmax``) expose exactly what the solver needs:
the value, the derivative ``u = phi'(z)``, the curvature bound of ``phi''`` and the curvature itself,
the convex conjugate used by the duality gap. The solver never branches on the loss.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._cy import _bcd as cy
from .._validation import as_float_array, as_matrix, check_bool, check_positive
from ..problems import Problem

__all__ = ["LeastSquares", "Logistic", "MultinomialLogistic", "LabelPropagation", "Quadratic"]


# --------------------------------------------------------------------------------------------------
# datafits: phi acting on z = A x (a vector, or an n x K matrix for the softmax)
# --------------------------------------------------------------------------------------------------
class _Squared:
    """phi_k(z) = 1/2 (z_k - b_k)^2."""

    name = "squared"
    curvature_bound = 1.0

    def __init__(self, b):
        self.b = b

    def value(self, z):
        r = z - self.b
        return 0.5 * float(r @ r)

    def deriv(self, z):
        return z - self.b

    def curvature(self, z):
        return np.ones_like(z)

    def conj_neg(self, u):
        """-sum phi*(u) (the data part of the dual objective) at the dual point u."""
        return -float(0.5 * (u @ u) + u @ self.b)


class _Logistic:
    """phi_k(z) = log(1 + exp(-y_k z_k)), y in {-1, +1}."""

    name = "logistic"
    curvature_bound = 0.25

    def __init__(self, y):
        self.y = y

    def value(self, z):
        return float(np.logaddexp(0.0, -self.y * z).sum())

    def deriv(self, z):
        return -self.y * _expit(-self.y * z)

    def curvature(self, z):
        s = _expit(self.y * z)
        return s * (1.0 - s)

    def conj_neg(self, u):
        # u_k = -y_k t_k with t_k in [0, 1]: phi*(u_k) = t log t + (1 - t) log(1 - t)
        t = np.clip(-self.y * u, 0.0, 1.0)
        return -float(_xlogx(t).sum() + _xlogx(1.0 - t).sum())


class _Softmax:
    """phi_k(z) = logsumexp(z_k) - z_k . Y_k for one-hot rows Y_k (z is n x K)."""

    name = "multinomial"
    curvature_bound = 0.5  # Boehning: Hessian of logsumexp <= 1/2 (I - 11^T/K) <= 1/2 I

    def __init__(self, Y):
        self.Y = Y

    def value(self, Z):
        m = Z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
        return float(lse.sum() - (Z * self.Y).sum())

    def deriv(self, Z):
        return softmax(Z) - self.Y

    def conj_neg(self, U):  # dual gap is not used for the softmax (no L1 there)
        raise NotImplementedError


def _expit(t):
    # stable logistic sigmoid 1 / (1 + exp(-t))
    out = np.empty_like(t)
    pos = t >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-t[pos]))
    e = np.exp(t[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _xlogx(t):
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)


def softmax(Z):
    """Row-wise softmax, max-shifted for stability."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# generalized linear problems
# --------------------------------------------------------------------------------------------------
class _GLM(Problem):
    """Shared part of the problems F(x) = sum_k phi_k((Ax)_k) + l2/2 |x|^2 + psi(x)."""

    n_classes = 1

    def _set_matrix(self, A):
        if sp.issparse(A):
            # infinities are checked here; NaNs by the column norms below (one pass over the data, no copy)
            A = as_matrix(A, "A", sparse_format="csc", allow_nan=True)
            sq = np.empty(A.shape[1])
            cy.col_sq_norms(A.indptr, A.data, sq)
            if not np.isfinite(sq.sum()):
                if np.isnan(sq).any():
                    raise ValueError("A contains NaN")
                raise ValueError("A has entries too large: a squared column norm overflows")
        else:
            A = as_matrix(A, "A")
            sq = np.einsum("ij,ij->j", A, A)
        self.A = A
        self.sparse = sp.issparse(A)
        self._csr = None
        self.col_sq_norms = sq.astype(np.float64)

    def _set_penalty(self, l1, l2, nonneg):
        self.l1 = check_positive(l1, "l1", strict=False)
        self.l2 = check_positive(l2, "l2", strict=False)
        self.nonneg = check_bool(nonneg, "nonneg")

    @property
    def shape(self):
        return self.A.shape

    @property
    def n_features(self):
        return self.A.shape[1]

    @property
    def csr(self):
        """Row-major copy of a sparse ``A`` (built once, for the incremental gradient)."""
        if self._csr is None and self.sparse:
            self._csr = self.A.tocsr()
        return self._csr

    @property
    def has_prox(self):
        """Whether psi is nonzero (L1 weight or a sign constraint)."""
        return self.l1 > 0 or self.nonneg

    def lipschitz(self):
        """Coordinate constants L_i = c ||A_:i||^2 + l2 (c = sup phi'')."""
        L = self.datafit.curvature_bound * self.col_sq_norms + self.l2
        return np.repeat(L, self.n_classes) if self.n_classes > 1 else L

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, u):
        return self.A.T @ u

    def penalty(self, x):
        return self.l1 * float(np.abs(x).sum()) + 0.5 * self.l2 * float((x * x).sum())

    def value(self, x):
        """F(x)."""
        x = np.asarray(x, dtype=np.float64).reshape(self.x_shape)
        if self.nonneg and np.any(x < 0):
            return np.inf
        return self.datafit.value(self.matvec(x)) + self.penalty(x)

    def gradient(self, x):
        """Gradient of the smooth part f (datafit + l2)."""
        x = np.asarray(x, dtype=np.float64).reshape(self.x_shape)
        return self.rmatvec(self.datafit.deriv(self.matvec(x))) + self.l2 * x

    @property
    def x_shape(self):
        return (self.n_features,) if self.n_classes == 1 else (self.n_features, self.n_classes)

    def duality_gap(self, x, z=None):
        """Absolute duality gap P(x) - D(theta) at the rescaled dual point theta = phi'(Ax).

        With ``l2 = 0`` the dual point is scaled by ``min(1, l1 / ||A^T u||_inf)`` (``max(A^T u)`` of
        ``-A^T u`` when ``nonneg``) so that it is feasible; with ``l2 > 0`` the dual is smooth and
        no scaling is needed. For least squares this is scikit-learn's Lasso gap.
        """
        z = self.matvec(x) if z is None else z
        u = self.datafit.deriv(z)
        v = -self.rmatvec(u)
        primal = self.datafit.value(z) + self.penalty(x)
        if self.l2 > 0:
            t = np.maximum(v - self.l1, 0.0) if self.nonneg else np.maximum(np.abs(v) - self.l1, 0.0)
            dual = self.datafit.conj_neg(u) - 0.5 / self.l2 * float(t @ t)
        else:
            vmax = float(v.max()) if self.nonneg else float(np.abs(v).max())
            scale = 1.0 if vmax <= self.l1 else self.l1 / vmax
            dual = self.datafit.conj_neg(scale * u)
        return primal - dual

    @property
    def gap_scale(self):
        """Divisor of the relative gap: ||b||^2 for least squares (sklearn's rule), F(0) = n log 2 for logistic."""
        return self._gap_scale


class LeastSquares(_GLM):
    """Regularized least squares.

    .. math::

        \\min_x \\tfrac12\\|Ax - b\\|^2 + \\tfrac{\\ell_2}{2}\\|x\\|^2 + \\ell_1\\|x\\|_1
        \\quad (\\text{and } x \\ge 0 \\text{ if } \\texttt{nonneg})

    Parameters
    ----------
    A : (n, p) array_like or scipy.sparse matrix
        Design matrix (sparse input is used in CSC form, float32/float64 kept).
    b : (n,) array_like
        Targets.
    l1, l2 : float, optional
        Penalty weights (>= 0). ``l1 = n * alpha`` reproduces scikit-learn's ``Lasso(alpha)``.
    nonneg : bool, optional
        Constrain x >= 0 (then the L1 term is ``l1 * sum(x)``).
    """

    def __init__(self, A, b, l1=0.0, l2=0.0, nonneg=False):
        self._set_matrix(A)
        self.b = as_float_array(b, "b", ndim=1, dtype=np.float64)
        if self.b.shape[0] != self.A.shape[0]:
            raise ValueError(f"b must have length {self.A.shape[0]} (rows of A); got {self.b.shape[0]}")
        self._set_penalty(l1, l2, nonneg)
        self.datafit = _Squared(self.b)
        self._gap_scale = max(float(self.b @ self.b), np.finfo(float).tiny)


class Logistic(_GLM):
    """Binary logistic regression with elastic-net penalty.

    .. math::

        \\min_x \\sum_k \\log\\big(1 + e^{-y_k a_k^T x}\\big) + \\tfrac{\\ell_2}{2}\\|x\\|^2 + \\ell_1\\|x\\|_1

    Parameters
    ----------
    A : (n, p) array_like or scipy.sparse matrix
    y : (n,) array_like
        Labels in {-1, +1} or {0, 1}.
    l1, l2 : float, optional
        ``l1 = 1 / C`` reproduces ``LogisticRegression(C=C, penalty="l1", fit_intercept=False)``.
    nonneg : bool, optional
        Constrain x >= 0.
    """

    def __init__(self, A, y, l1=0.0, l2=0.0, nonneg=False):
        self._set_matrix(A)
        y = as_float_array(y, "y", ndim=1, dtype=np.float64)
        if y.shape[0] != self.A.shape[0]:
            raise ValueError(f"y must have length {self.A.shape[0]} (rows of A); got {y.shape[0]}")
        vals = set(np.unique(y).tolist())
        if not vals <= {-1.0, 1.0} and not vals <= {0.0, 1.0}:
            raise ValueError(f"y must hold labels in {{-1, +1}} or {{0, 1}}; got values {sorted(vals)[:5]}")
        self.y = np.where(y > 0, 1.0, -1.0)
        self._set_penalty(l1, l2, nonneg)
        self.datafit = _Logistic(self.y)
        self._gap_scale = self.A.shape[0] * np.log(2.0)


class MultinomialLogistic(_GLM):
    """Multinomial (softmax) logistic regression, coefficients X of shape (p, K).

    .. math::

        \\min_X \\sum_k \\big[\\operatorname{logsumexp}(a_k^T X) - a_k^T X y_k\\big] + \\tfrac{\\ell_2}{2}\\|X\\|_F^2

    Parameters
    ----------
    A : (n, p) array_like or scipy.sparse matrix
    Y : (n,) int labels in ``0..K-1`` or (n, K) one-hot array
    l2 : float, optional
        Ridge weight (> 0 makes the minimizer unique and finite on separable data).
    n_classes : int, optional
        K when ``Y`` holds integer labels and some class is absent.
    """

    def __init__(self, A, Y, l2=0.0, n_classes=None):
        self._set_matrix(A)
        Y = np.asarray(Y)
        n = self.A.shape[0]
        if Y.ndim == 1:
            if Y.dtype.kind == "f":
                if not np.all(np.isfinite(Y)) or np.any(Y != np.round(Y)):
                    raise ValueError("Y must hold integer class labels (or be a one-hot matrix)")
            elif Y.dtype.kind not in "iub":
                raise TypeError(f"Y must hold integer class labels; got dtype {Y.dtype}")
            if Y.shape[0] != n:
                raise ValueError(f"Y must have length {n} (rows of A); got {Y.shape[0]}")
            lab = Y.astype(np.int64)
            if lab.size and lab.min() < 0:
                raise ValueError(f"Y labels must be >= 0; got {lab.min()}")
            K = int(lab.max()) + 1 if n_classes is None else int(n_classes)
            if lab.max() >= K:
                raise ValueError(f"Y has label {lab.max()} but n_classes={K}")
            Yo = np.zeros((n, K))
            Yo[np.arange(n), lab] = 1.0
        else:
            Yo = as_float_array(Y, "Y", ndim=2, dtype=np.float64)
            if Yo.shape[0] != n:
                raise ValueError(f"Y must have {n} rows (rows of A); got {Yo.shape[0]}")
            if not (np.all((Yo == 0) | (Yo == 1)) and np.all(Yo.sum(axis=1) == 1)):
                raise ValueError("Y must be one-hot: entries 0/1 with one 1 per row")
        if Yo.shape[1] < 2:
            raise ValueError(f"MultinomialLogistic needs at least 2 classes; got {Yo.shape[1]}")
        self.Y = Yo
        self.n_classes = Yo.shape[1]
        self._set_penalty(0.0, l2, False)
        self.datafit = _Softmax(Yo)
        self._gap_scale = n * np.log(self.n_classes)


# --------------------------------------------------------------------------------------------------
# sparse quadratics
# --------------------------------------------------------------------------------------------------
class Quadratic(Problem):
    """Convex quadratic :math:`\\tfrac12 x^TQx - c^Tx` with ``Q`` symmetric positive definite.

    Parameters
    ----------
    Q : (p, p) array_like or scipy.sparse matrix
        Symmetric with a positive diagonal (positive definiteness is checked by the solves: a
        non-positive pivot raises ``ValueError``).
    c : (p,) array_like
    """

    has_prox = False

    def __init__(self, Q, c):
        Q = as_matrix(Q, "Q", square=True, sparse_format="csr", dtype=np.float64)
        if sp.issparse(Q):
            asym = abs(Q - Q.T)
            amax = asym.max() if asym.nnz else 0.0
            scale = abs(Q).max()
        else:
            amax = np.abs(Q - Q.T).max()
            scale = np.abs(Q).max()
        if amax > 1e-12 * max(scale, 1.0):
            raise ValueError(f"Q must be symmetric; max |Q - Q^T| = {amax:.3g}")
        d = Q.diagonal()
        if np.any(d <= 0):
            raise ValueError(f"Q must have a positive diagonal (SPD); Q[{int(np.argmin(d))}, ...] = {d.min():.3g}")
        self.c = as_float_array(c, "c", ndim=1, dtype=np.float64)
        if self.c.shape[0] != Q.shape[0]:
            raise ValueError(f"c must have length {Q.shape[0]}; got {self.c.shape[0]}")
        self._set_Q(Q)

    def _set_Q(self, Q):
        self.Q = sp.csr_matrix(Q) if not sp.issparse(Q) else Q
        self.Q.sort_indices()
        self.diag = self.Q.diagonal().astype(np.float64)

    @property
    def n_features(self):
        return self.Q.shape[0]

    x_shape = property(lambda self: (self.n_features,))

    def lipschitz(self):
        return self.diag.copy()

    def value(self, x):
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * x @ (self.Q @ x) - self.c @ x)

    def gradient(self, x):
        return self.Q @ np.asarray(x, dtype=np.float64) - self.c


class LabelPropagation(Quadratic):
    """Label propagation on a weighted graph: a sparse quadratic in the unlabelled values.

    .. math::

        \\min_{x_U} \\tfrac12 \\sum_{(i,j)\\in E} w_{ij}(x_i - x_j)^2, \\quad x_S = y_S \\text{ fixed}

    which is :math:`\\tfrac12 x_U^T Q x_U - c^T x_U` with :math:`Q = (\\mathrm{Deg} - W)_{UU}` and
    :math:`c = W_{US} y_S`, up to a constant.

    Parameters
    ----------
    W : (N, N) array_like or scipy.sparse matrix
        Symmetric nonnegative weights (the diagonal is ignored).
    y : (N,) or (n_labelled,) array_like
        Label values: of every node (only the labelled entries are read) or of the labelled nodes in order.
    labeled_mask : (N,) bool array_like
        Which nodes are labelled.

    Raises
    ------
    ValueError
        If a connected component of the unlabelled nodes touches no labelled node (Q is singular).
    """

    def __init__(self, W, y, labeled_mask):
        W = as_matrix(W, "W", square=True, sparse_format="csr", dtype=np.float64)
        W = sp.csr_matrix(W)
        W.setdiag(0.0)
        W.eliminate_zeros()
        if W.nnz and W.data.min() < 0:
            raise ValueError(f"W must be nonnegative; min weight {W.data.min():.3g}")
        if W.nnz and abs(W - W.T).max() > 1e-12 * max(W.data.max(), 1.0):
            raise ValueError("W must be symmetric")
        N = W.shape[0]
        mask = np.asarray(labeled_mask)
        if mask.dtype != bool:
            raise TypeError(f"labeled_mask must be a boolean array; got dtype {mask.dtype}")
        if mask.shape != (N,):
            raise ValueError(f"labeled_mask must have shape ({N},); got {mask.shape}")
        if not mask.any():
            raise ValueError("labeled_mask must mark at least one labelled node")
        if mask.all():
            raise ValueError("labeled_mask marks every node; there is nothing to propagate")
        y = as_float_array(y, "y", ndim=1, dtype=np.float64)
        nl = int(mask.sum())
        if y.shape[0] == N:
            yS = y[mask]
        elif y.shape[0] == nl:
            yS = y
        else:
            raise ValueError(f"y must have length {N} (all nodes) or {nl} (labelled nodes); got {y.shape[0]}")
        U = np.flatnonzero(~mask)
        S = np.flatnonzero(mask)
        deg = np.asarray(W.sum(axis=1)).ravel()
        WUU = W[U][:, U]
        Q = (sp.diags(deg[U]) - WUU).tocsr()
        c = W[U][:, S] @ yS
        # every unlabelled component must touch a labelled node, else Q is singular
        from scipy.sparse.csgraph import connected_components
        ncomp, comp = connected_components(WUU, directed=False)
        touches = np.zeros(ncomp, dtype=bool)
        touches[comp[deg[U] - np.asarray(WUU.sum(axis=1)).ravel() > 0]] = True
        if not touches.all():
            raise ValueError(f"{int((~touches).sum())} connected component(s) of unlabelled nodes touch no labelled "
                             "node: their labels are undetermined (Q is singular)")
        self.W, self.labeled_mask, self.y_labeled = W, mask, yS
        self.unlabeled = U
        self.c = np.asarray(c, dtype=np.float64)
        self._set_Q(Q)

    def full_labels(self, x):
        """All N node values: the labelled ones and x on the unlabelled nodes."""
        out = np.empty(self.W.shape[0])
        out[self.labeled_mask] = self.y_labeled
        out[self.unlabeled] = x
        return out
