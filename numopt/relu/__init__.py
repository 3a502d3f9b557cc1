"""numopt.relu: convex (global) training of two-layer ReLU networks.

* ``numopt.minimize(TwoLayerReLU(X, y, beta), method="admm")``: ADMM on the convex reformulation over
  sampled activation patterns, with the u-step system factorised once (Bai, Gautam, Sojoudi 2023).
* ``method="scp"``: the sampled convex program over fixed random ReLU features (l1 / lasso form) by
  accelerated proximal gradient.
* :class:`ConvexReLUClassifier`, :class:`ConvexReLURegressor`: scikit-learn estimators.
"""
from .._lazy import lazy_exports
from ._problem import TwoLayerReLU

__all__ = ["ConvexReLUClassifier", "ConvexReLURegressor", "TwoLayerReLU", "beta_path"]

# the estimators import scikit-learn (~1 s): load them on first use, not with ``import numopt``
_LAZY = {"ConvexReLUClassifier": "._estimators", "ConvexReLURegressor": "._estimators", "beta_path": "._estimators"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
