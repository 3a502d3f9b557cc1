"""asv: convex two-layer ReLU training, numopt ADMM/SCP vs CVXPY (Clarabel) and MLPClassifier."""
import warnings

import numpy as np


def _bc(n=None):
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return (X, 2.0 * y - 1) if n is None else (X[:n], 2.0 * y[:n] - 1)


class ConvexProgram:
    """Same sampled program (breast_cancer, beta = 1): ADMM vs CVXPY+Clarabel."""
    params = ([8, 32], ["admm", "cvxpy"])
    param_names = ["P", "solver"]
    timeout = 300

    def setup(self, P, solver):
        from numopt.problems import TwoLayerReLU
        from numopt.relu._kernels import warmup
        warmup()
        self.X, self.y = _bc()
        self.D = TwoLayerReLU(self.X, self.y, 1.0, n_patterns=P, random_state=0).Dmat

    def _solve(self, solver):
        import numopt
        from numopt.problems import TwoLayerReLU
        from numopt.relu._cvx import cvxpy_solve
        pr = TwoLayerReLU(self.X, self.y, 1.0, patterns=self.D)
        if solver == "cvxpy":
            return cvxpy_solve(pr)[0], 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # rtol is about the relative objective accuracy reached (numopt.relu._admm): 1e-5 is within 1e-4
            res = numopt.minimize(pr, method="admm", rtol=1e-5, atol=1e-7, maxiter=50000)
        return res.fun, res.nit

    def time_solve(self, P, solver):
        self._solve(solver)

    def peakmem_solve(self, P, solver):
        self._solve(solver)

    def track_iterations(self, P, solver):
        return self._solve(solver)[1]


class PerIteration:
    """ADMM cost per iteration vs n and P (Woodbury vs decoupled Cholesky), double vs single precision."""
    params = ([150, 569], [8, 32, 64], ["float64", "float32"])
    param_names = ["n", "P", "dtype"]

    def setup(self, n, P, dtype):
        from numopt.problems import TwoLayerReLU
        from numopt.relu._kernels import warmup
        warmup()
        X, y = _bc(n)
        self.pr = TwoLayerReLU(X, y, 1.0, n_patterns=P, random_state=0)
        self.run(n, P, dtype)   # cache the factorisation

    def run(self, n, P, dtype):
        import numopt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # rtol 1e-4 (float32's floor) is out of reach in 50 iterations: all 50 run for both precisions
            return numopt.minimize(self.pr, method="admm", maxiter=50, rtol=1e-4, atol=1e-14, dtype=dtype)

    def time_50_iterations(self, n, P, dtype):
        self.run(n, P, dtype)


class Classifier:
    """Fit time and accuracy: ConvexReLUClassifier vs MLPClassifier (same hidden width 2P)."""
    params = (["convex-admm", "convex-admm-learned", "convex-admm-learned-width64", "convex-scp", "mlp"],)
    param_names = ["model"]
    timeout = 300

    def setup(self, model):
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
        from numopt.relu._kernels import warmup
        warmup()
        X, y = load_breast_cancer(return_X_y=True)
        self.data = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)

    def _model(self, model):
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from numopt.relu import ConvexReLUClassifier
        if model == "mlp":
            return make_pipeline(StandardScaler(), MLPClassifier((64,), random_state=0))
        if model == "convex-scp":
            return ConvexReLUClassifier(n_patterns=32, solver="scp", loss="logistic", random_state=0)
        if model == "convex-admm-learned-width64":
            return ConvexReLUClassifier(n_patterns=32, pattern_refinement=1.0, max_width=64, random_state=0)
        if model == "convex-admm-learned":
            return ConvexReLUClassifier(n_patterns=32, pattern_refinement=1.0, random_state=0)
        return ConvexReLUClassifier(n_patterns=32, random_state=0)

    def time_fit(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._model(model).fit(self.data[0], self.data[2])

    def track_test_accuracy(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = self._model(model).fit(self.data[0], self.data[2])
        return float(m.score(self.data[1], self.data[3]))
