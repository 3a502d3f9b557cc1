"""scikit-learn estimators trained by the convex program: ConvexReLUClassifier, ConvexReLURegressor.

Both standardise ``X`` internally, sample activation patterns on the standardised inputs (plus the
bias column), solve :class:`~numopt.problems.TwoLayerReLU` with numopt's own solvers and store the
*recovered* ReLU network in the original feature space (the standardisation is folded into the first
layer), so prediction on new data never uses the training patterns.

``beta`` is the weight decay next to the *summed* loss: ``beta <-> alpha`` of scikit-learn's
``MLPRegressor``/``MLPClassifier`` (whose objective is the mean loss plus ``alpha / (2 n) ||W||^2``).
The hidden bias is part of each neuron's weight vector and is penalised too.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._minimize import minimize
from .._threads import single_thread_blas
from ..exceptions import ConvergenceWarning
from ._problem import TwoLayerReLU, refine_patterns

__all__ = ["ConvexReLUClassifier", "ConvexReLURegressor", "beta_path"]

_METHODS = ("admm", "scp")
# the nominal ADMM iterates in float32 at tol >= this (minimize_admm's ``dtype``): same iterations and
# objective as float64 at 1e-3 on breast_cancer and binary digits, half the time per iteration
_F32_TOL = 1e-3
# n (d + 1) 2P (P = n_patterns) up to which a fit pins BLAS to one thread (see ``_solve``)
_SINGLE_THREAD_WORK = 8e6


def beta_path(problem, betas, *, method="admm", **options):
    """Solve ``problem`` along ``betas`` (sorted decreasing), warm-starting each solve from the last.

    ``beta`` does not enter the ADMM u-system, so every solve reuses the cached factorisation (one
    factorisation for the whole path). Returns the list of results in the order of ``betas`` given.
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0 or not np.all(np.isfinite(betas)) or np.any(betas < 0):
        raise ValueError("betas must be a non-empty 1-D array of finite values >= 0")
    order = np.argsort(-betas, kind="stable")
    out = [None] * betas.size
    state = x0 = None
    for i in order:
        pr = problem.with_beta(float(betas[i]))
        if method == "admm":
            res = minimize(pr, method="admm", initial_state=state, **options)
            state = res.state
        else:
            res = minimize(pr, x0, method=method, **options)
            x0 = res.x
        out[i] = res
    return out


def _neuron_norms(res):
    """``||u_g||`` of a solve's ``2P`` neurons (layout ``[v_1..v_P, w_1..w_P]``); non-zero ones are its width."""
    return np.linalg.norm(np.hstack([res.v, res.w]), axis=0)


class _ConvexReLUBase(BaseEstimator):
    def _validate_params_(self):
        from .._validation import check_bool, check_choice, check_int, check_positive
        check_positive(self.beta, "beta", strict=False)
        check_int(self.n_patterns, "n_patterns", min_value=1)
        check_choice(self.solver, "solver", _METHODS)
        check_int(self.max_iter, "max_iter", min_value=1)
        check_positive(self.tol, "tol")
        check_bool(self.bias, "bias")
        check_bool(self.warm_start, "warm_start")
        if self.pattern_refinement is not None:
            check_positive(self.pattern_refinement, "pattern_refinement")
            if self.solver != "admm":
                raise ValueError("pattern_refinement needs solver='admm' (SCP draws its own neuron directions)")
        if self.solver_options is not None and not isinstance(self.solver_options, dict):
            raise TypeError("solver_options must be a dict or None")
        eps = self.adversarial_eps
        if np.ndim(eps) == 0:
            check_positive(eps, "adversarial_eps", strict=False)
        elif (np.ndim(eps) != 1 or not np.all(np.isfinite(np.asarray(eps, dtype=float)))
              or np.any(np.asarray(eps, dtype=float) < 0)):
            raise ValueError("adversarial_eps must be a number >= 0 or a 1-D array of finite values >= 0")
        robust = bool(np.any(np.asarray(eps, dtype=float) > 0))
        if self.solver == "scp" and robust:
            raise ValueError("adversarial_eps > 0 needs solver='admm' (the SCP path solves the nominal program only)")
        if self.max_width is not None:
            check_int(self.max_width, "max_width", min_value=1)
            if self.solver != "admm":
                raise ValueError("max_width needs solver='admm' (the capped refit fixes neurons at zero in the ADMM)")
            if robust:
                raise ValueError("max_width is supported for standard training only (adversarial_eps = 0)")

    def _standardize(self, X):
        self.x_mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.x_scale_ = np.where(sd > 1e-12 * max(1.0, float(np.abs(X).max(initial=0.0))), sd, 1.0)
        return (X - self.x_mean_) / self.x_scale_

    def _solve(self, Z, targets, loss):
        """Fit one network per column of ``targets`` (shared patterns and factorisation).

        Small programs run with BLAS pinned to one thread: their refinement and ADMM products are too small for
        threaded BLAS (measured on 2 cores, 5-fold fit time per fold, two threads vs one: breast_cancer 0.085 vs
        0.037 s, with learned patterns and ``max_width=64`` 0.276 vs 0.139 s; binary digits 0.450 vs 0.422 s and
        0.432 vs 0.353 s).
        """
        n, p = Z.shape
        with single_thread_blas(n * (p + 1) * 2 * self.n_patterns <= _SINGLE_THREAD_WORK):
            return self._solve_programs(Z, targets, loss)

    def _solve_programs(self, Z, targets, loss):
        opts = dict(self.solver_options or {})
        opts.setdefault("maxiter", self.max_iter)
        eps = self._eps()
        if self.solver == "admm":
            opts.setdefault("rtol", self.tol)
            if not np.any(eps > 0):     # single-precision iterations at prediction-grade tolerances
                opts.setdefault("dtype", np.float32 if opts["rtol"] >= _F32_TOL else np.float64)
        else:
            opts.setdefault("tol", self.tol)
        key = (self.n_patterns, self.random_state, self.pattern_refinement, self.max_width, self.bias)
        reuse = (self.warm_start and getattr(self, "_problem", None) is not None
                 and getattr(self, "_fit_key", None) == key
                 and self._problem.X.shape[0] == Z.shape[0]
                 and np.array_equal(self._problem.X[:, :Z.shape[1]], Z)
                 and np.array_equal(self._problem.eps_weights[:Z.shape[1]], eps))
        if reuse:
            base = self._problem
        else:
            base = self._patterned_problem(Z, targets, loss, eps, self.n_patterns)
            self._states = [None] * len(targets)
        results = self._solve_all(base, targets, loss, opts, reuse)
        W = self.max_width
        if W is not None:
            if not reuse and base.n_patterns_ < W and min(np.count_nonzero(_neuron_norms(r)) for r in results) < W:
                # width left unused: a finer arrangement, W cells (2W candidate neurons), capped to W below
                finer = self._patterned_problem(Z, targets, loss, eps, W)
                if finer.n_patterns_ > base.n_patterns_:        # (few distinct patterns exist in low dimension)
                    base = finer
                    self._states = [None] * len(targets)
                    results = self._solve_all(base, targets, loss, opts, False)
            results = [self._capped(base.with_targets(t, loss).with_beta(self.beta), r, W, opts)
                       for t, r in zip(targets, results)]
        self._problem, self._fit_key = base, key
        self.n_patterns_ = int(base.n_patterns_)
        return results

    @contextlib.contextmanager
    def _quiet(self):
        """Silence :class:`~numopt.exceptions.ConvergenceWarning` unless ``verbose``."""
        with warnings.catch_warnings():
            if not self.verbose:
                warnings.simplefilter("ignore", ConvergenceWarning)
            yield

    def _patterned_problem(self, Z, targets, loss, eps, n_patterns):
        """The convex program on ``n_patterns`` sampled (or, with ``pattern_refinement``, learned) patterns."""
        base = TwoLayerReLU(Z, targets[0], self.beta, n_patterns=n_patterns, loss=loss, bias=self.bias,
                            adversarial_eps=eps, random_state=self.random_state)
        if self.pattern_refinement is not None:      # learned gates in place of the sampled ones
            T = np.column_stack(targets)
            T = 2.0 * T - 1.0 if loss == "logistic" else T
            D = refine_patterns(base.X, T, base.Dmat, self.pattern_refinement)
            base = TwoLayerReLU(Z, targets[0], self.beta, loss=loss, bias=self.bias, adversarial_eps=eps,
                                patterns=D)
        return base

    def _solve_all(self, base, targets, loss, opts, reuse):
        """One solve per target on ``base``'s patterns (warm-started from the last fit's states if ``reuse``)."""
        results = []
        with self._quiet():
            for j, t in enumerate(targets):
                pr = base.with_targets(t, loss).with_beta(self.beta)
                kw = dict(opts)
                if reuse and self.solver == "admm" and self._states[j] is not None and "initial_state" not in kw:
                    kw["initial_state"] = self._states[j]
                res = minimize(pr, method=self.solver, verbose=self.verbose, **kw)
                if self.solver == "admm":
                    self._states[j] = res.state
                results.append(res)
        return results

    def _capped(self, problem, res, width, opts):
        """Keep the ``width`` neurons of largest ``||u_g||`` and re-solve with the others fixed at zero.

        The capped program has the same u-system (only the v-step's prox changes, ADMM option ``active``), so
        the cached factorisation is reused and the solve warm-starts from the uncapped state.
        """
        norms = _neuron_norms(res)
        if np.count_nonzero(norms) <= width:
            return res
        active = np.zeros(norms.size, dtype=bool)
        active[np.argsort(-norms, kind="stable")[:width]] = True
        kw = dict(opts, initial_state=res.state, active=active)
        with self._quiet():
            return minimize(problem, method="admm", verbose=self.verbose, **kw)

    def _eps(self):
        """``adversarial_eps`` (original feature units) as radii of the standardised features."""
        eps = np.asarray(self.adversarial_eps, dtype=np.float64)
        if eps.ndim == 1 and eps.shape[0] != self.n_features_in_:
            raise ValueError(f"adversarial_eps must have length n_features={self.n_features_in_}; got {eps.shape[0]}")
        return np.broadcast_to(eps, (self.n_features_in_,)) / self.x_scale_

    def _store_network(self, results, out_scale, out_shift):
        """Fold the standardisation into layer 1 and stack the per-output networks."""
        p = self.n_features_in_
        W1, b1, W2 = [], [], []
        K = len(results)
        for j, res in enumerate(results):
            U, a = res.first_layer, res.second_layer
            Ux = U[:p] / self.x_scale_[:, None]
            bias = (U[p] if self.bias else 0.0) - self.x_mean_ @ Ux
            W1.append(Ux)
            b1.append(np.broadcast_to(bias, (U.shape[1],)))
            col = np.zeros((a.size, K))
            col[:, j] = a * out_scale[j]
            W2.append(col)
        self.first_layer_weights_ = np.hstack(W1) if W1 else np.zeros((p, 0))
        self.first_layer_bias_ = np.concatenate(b1)
        self.second_layer_weights_ = np.vstack(W2)
        self.output_bias_ = np.asarray(out_shift, dtype=np.float64)
        self.n_neurons_ = int(self.first_layer_weights_.shape[1])
        self.n_iter_ = int(max(r.nit for r in results))
        self.loss_curve_ = list(np.asarray(results[0].history.get("fun", [])))
        self.objective_ = [float(r.fun) for r in results]
        self.solver_results_ = results

    def _forward(self, X):
        check_is_fitted(self, "first_layer_weights_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        H = np.maximum(X @ self.first_layer_weights_ + self.first_layer_bias_, 0.0)
        return H @ self.second_layer_weights_ + self.output_bias_

    def to_torch(self):
        """An equivalent ``torch.nn.Sequential(Linear, ReLU, Linear)`` in float64 (torch imported lazily).

        Its output equals :meth:`decision_function` (classifier) / :meth:`predict` (regressor) up to
        floating-point rounding; call ``.float()`` on it for float32 inference.
        """
        check_is_fitted(self, "first_layer_weights_")
        import torch

        p, m = self.first_layer_weights_.shape
        K = self.second_layer_weights_.shape[1]
        net = torch.nn.Sequential(torch.nn.Linear(p, m), torch.nn.ReLU(), torch.nn.Linear(m, K)).double()
        with torch.no_grad():
            net[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(self.first_layer_weights_.T)))
            net[0].bias.copy_(torch.from_numpy(np.ascontiguousarray(self.first_layer_bias_)))
            net[2].weight.copy_(torch.from_numpy(np.ascontiguousarray(self.second_layer_weights_.T)))
            net[2].bias.copy_(torch.from_numpy(np.ascontiguousarray(self.output_bias_)))
        return net


class ConvexReLURegressor(RegressorMixin, _ConvexReLUBase):
    """Two-layer ReLU regression trained to global optimality over sampled patterns (squared loss).

    Parameters
    ----------
    beta : float
        Weight decay on ``sum_j (||u_j||^2 + alpha_j^2) / 2`` next to the summed squared loss of the
        *scaled* targets (``y`` is centred and divided by its standard deviation internally).
    n_patterns : int
        Sampled activation patterns ``P`` (hidden width at most ``2P``).
    solver : {"admm", "scp"}
        numopt method used (see :func:`numopt.show_options`).
    max_iter : int
        Iteration limit of the solver.
    tol : float, default 1e-3
        Relative tolerance of the solver's stopping rule (ADMM: the primal and dual residual tolerances;
        SCP: the proximal-gradient step). The default serves prediction: test accuracy stops changing long
        before the objective does (5-fold CV, width 64: 1e-3 against 1e-4 gives the same accuracy on
        breast_cancer and binary digits, at 3-4x less fit time). Pass ``1e-4`` or less when the convex
        objective itself matters (``objective_``). At ``tol >= 1e-3`` the (nominal) ADMM iterates in
        float32 (``dtype`` of :func:`numopt.relu._admm.minimize_admm`; the residual norms, the objective and
        the stored network stay float64): the same iterations and objective as float64 at 1e-3 on both data
        sets, about half the fit time. ``solver_options={"dtype": np.float64}`` overrides it.
    bias : bool
        Hidden-layer bias (penalised with the weights).
    warm_start : bool
        Refitting on the same ``X`` reuses the patterns, the factorisation and the last ADMM state
        (fast ``beta`` sweeps with ``set_params(beta=...)``); a change of ``n_patterns``, ``random_state``,
        ``pattern_refinement``, ``max_width`` or ``bias`` draws new patterns.
    solver_options : dict, optional
        Extra options of the solver (e.g. ``{"rho": 1.0}``).
    random_state : None or int
        Seed of the pattern sampling.
    pattern_refinement : float or None, default None
        ``None``: the sampled patterns (the paper's program). A relative ridge ``> 0`` (``1.0`` in every
        measurement below): replace the sampled gates by learned ones from a convex gated-ReLU ridge fit
        (:func:`numopt.relu._problem.refine_patterns`), one extra kernel ridge solve by conjugate gradients
        (``O(n d P)`` per step; ``solver="admm"`` only).
        Measured (5-fold CV, width 64, three seeds): classification gains (binary digits 0.9751 -> 0.9826,
        breast_cancer 0.9625 -> 0.9760, squared loss), regression lost (diabetes R^2 0.489 -> 0.435,
        friedman1 0.774 -> 0.738, ``ConvexReLURegressor``), so it is not the default.
    max_width : int or None, default None
        Hidden-width budget of each output's network (one-vs-rest fits one network per class), like the
        hidden width of an MLP. ``None``: no cap (up to ``2 * n_patterns`` neurons). Otherwise, two steps:

        1. *Grow*: if the fit on ``n_patterns`` cells leaves width unused (some output has fewer than
           ``max_width`` neurons) and ``n_patterns < max_width``, the program is solved again on a finer
           arrangement of ``max_width`` cells (sampled, or learned with ``pattern_refinement``).
        2. *Cap*: an output with more than ``max_width`` neurons keeps the ``max_width`` of largest
           ``||u_g||`` and the program is re-solved with the others fixed at zero (ADMM option ``active``:
           same factorisation, warm start from the uncapped state). The capped network is the optimum of
           that constrained convex program, so it still equals the convex model on the training data.

        ``solver="admm"`` and standard training only. The number of cells used is ``n_patterns_``.
        Measured with ``pattern_refinement=1.0`` and ``max_width=64`` in docs/relu.md (tables 2, 2b and 5).
    verbose : bool
        Solver logging; also shows :class:`~numopt.exceptions.ConvergenceWarning` (silenced otherwise).
    adversarial_eps : float or array_like of shape (n_features,)
        l_inf radius (in the units of ``X``; one for all features or one per feature) of the adversarial
        training: the robust convex program (worst-case loss, robust cones) solved by ADMM. 0: standard training.

    Attributes
    ----------
    first_layer_weights_ : ndarray, shape (n_features, n_neurons)
    first_layer_bias_ : ndarray, shape (n_neurons,)
    second_layer_weights_ : ndarray, shape (n_neurons, 1)
    output_bias_ : ndarray, shape (1,)
    n_neurons_, n_iter_, loss_curve_, objective_
    n_patterns_ : int
        Activation patterns (cells) of the program solved last (``n_patterns``, or ``max_width`` if grown).
    """

    def __init__(self, beta=1.0, *, n_patterns=32, solver="admm", max_iter=2000, tol=1e-3, bias=True,
                 warm_start=False, solver_options=None, random_state=None, verbose=False, adversarial_eps=0.0,
                 pattern_refinement=None, max_width=None):
        self.max_width = max_width
        self.pattern_refinement = pattern_refinement
        self.adversarial_eps = adversarial_eps
        self.beta = beta
        self.n_patterns = n_patterns
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.bias = bias
        self.warm_start = warm_start
        self.solver_options = solver_options
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        self._validate_params_()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        Z = self._standardize(X)
        self.y_mean_ = float(y.mean())
        sd = float(y.std())
        self.y_scale_ = sd if sd > 0 else 1.0
        res = self._solve(Z, [(y - self.y_mean_) / self.y_scale_], "squared")
        self._store_network(res, [self.y_scale_], [self.y_mean_])
        return self

    def predict(self, X):
        return self._forward(X)[:, 0]


class ConvexReLUClassifier(ClassifierMixin, _ConvexReLUBase):
    """Two-layer ReLU classifier trained to global optimality over sampled patterns.

    Binary problems fit one network; ``K > 2`` classes fit one network per class (one-vs-rest) on the
    same patterns, so they share the ADMM factorisation.

    Parameters
    ----------
    beta : float
        Weight decay next to the summed loss (scikit-learn's MLP ``alpha``).
    n_patterns : int
        Sampled activation patterns ``P``.
    loss : {"squared", "logistic"}
        ``"squared"`` fits +-1 targets (the paper's setting, exact u-steps); ``"logistic"`` fits
        ``P(y = 1) = sigmoid(2 f(x))`` and enables :meth:`predict_proba`.
    solver, max_iter, tol, bias, warm_start, solver_options, random_state, verbose, adversarial_eps, pattern_refinement, max_width
        As in :class:`ConvexReLURegressor`. With ``adversarial_eps > 0`` the network is trained for the worst
        case over ``||delta||_inf <= eps`` around each training point (both losses).

    Attributes
    ----------
    classes_ : ndarray
    first_layer_weights_ : ndarray, shape (n_features, n_neurons)
    first_layer_bias_ : ndarray, shape (n_neurons,)
    second_layer_weights_ : ndarray, shape (n_neurons, n_outputs)
        ``n_outputs = 1`` for two classes, ``K`` otherwise (block structure: each neuron feeds one class).
    output_bias_ : ndarray, shape (n_outputs,)
    n_neurons_, n_iter_, loss_curve_, objective_, n_patterns_
    """

    def __init__(self, beta=1.0, *, n_patterns=32, loss="squared", solver="admm", max_iter=2000, tol=1e-3,
                 bias=True, warm_start=False, solver_options=None, random_state=None, verbose=False,
                 adversarial_eps=0.0, pattern_refinement=None, max_width=None):
        self.max_width = max_width
        self.pattern_refinement = pattern_refinement
        self.adversarial_eps = adversarial_eps
        self.beta = beta
        self.n_patterns = n_patterns
        self.loss = loss
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.bias = bias
        self.warm_start = warm_start
        self.solver_options = solver_options
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        self._validate_params_()
        from .._validation import check_choice
        check_choice(self.loss, "loss", ("squared", "logistic"))
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        K = self.classes_.size
        if K < 2:
            raise ValueError(f"ConvexReLUClassifier needs at least 2 classes in y; got {K} class")
        cols = [yi == 1] if K == 2 else [yi == k for k in range(K)]
        lo = 0.0 if self.loss == "logistic" else -1.0
        targets = [np.where(c, 1.0, lo) for c in cols]
        Z = self._standardize(X)
        res = self._solve(Z, targets, self.loss)
        self._store_network(res, [1.0] * len(targets), np.zeros(len(targets)))
        return self

    def decision_function(self, X):
        """Network output ``f(x)``: shape ``(n,)`` for two classes (positive -> ``classes_[1]``), else ``(n, K)``."""
        out = self._forward(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X):
        f = self.decision_function(X)
        idx = (f > 0).astype(int) if f.ndim == 1 else np.argmax(f, axis=1)
        return self.classes_[idx]

    def _has_proba(self):
        return self.loss == "logistic"

    @available_if(_has_proba)
    def predict_proba(self, X):
        """``sigmoid(2 f(x))`` per class (logistic loss only); one-vs-rest columns are normalised."""
        from scipy.special import expit
        f = self.decision_function(X)
        if f.ndim == 1:
            p1 = expit(2.0 * f)
            return np.column_stack([1.0 - p1, p1])
        p = expit(2.0 * f)
        s = p.sum(axis=1, keepdims=True)
        return np.divide(p, s, out=np.full_like(p, 1.0 / p.shape[1]), where=s > 0)

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
