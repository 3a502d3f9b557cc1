"""numopt.relu: convex (global) training of two-layer ReLU networks.

* ``numopt.minimize(TwoLayerReLU(X, y, beta), method="admm")``: ADMM on the convex reformulation over
  sampled activation patterns, with the u-step system factorised once (Bai, Gautam, Sojoudi 2023).
* ``method="scp"``: the sampled convex program over fixed random ReLU features (l1 / lasso form) by
  accelerated proximal gradient.
* :class:`ConvexReLUClassifier`, :class:`ConvexReLURegressor`: scikit-learn estimators.
"""
import importlib

from ._problem import TwoLayerReLU

__all__ = ["ConvexReLUClassifier", "ConvexReLURegressor", "TwoLayerReLU", "beta_path"]

# the estimators import scikit-learn (~1 s): load them on first use, not with ``import numopt``
_LAZY = {"ConvexReLUClassifier": "._estimators", "ConvexReLURegressor": "._estimators", "beta_path": "._estimators"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
