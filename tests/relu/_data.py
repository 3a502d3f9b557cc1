"""Small synthetic data sets for the relu tests."""
import numpy as np


def make_data(n=40, p=3, seed=0, kind="sign"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if kind == "sign":
        y = np.sign(X[:, 0] * X[:, 1] + 0.3 * rng.standard_normal(n))
        y[y == 0] = 1.0
    elif kind == "binary":
        y = (X[:, 0] * X[:, 1] + 0.3 * rng.standard_normal(n) > 0).astype(float)
    else:
        y = np.maximum(X @ rng.standard_normal(p), 0) - 0.5 * np.maximum(X @ rng.standard_normal(p), 0)
        y += 0.1 * rng.standard_normal(n)
    return X, y
