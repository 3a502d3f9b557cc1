"""Entropic optimal transport: compiled log-domain Sinkhorn and Sinkhorn-Newton-Sparse (SNS).

>>> import numopt.ot
>>> P = numopt.ot.sinkhorn(a, b, M, reg=1e-3)                  # doctest: +SKIP  (POT's signature)
>>> res = numopt.minimize(numopt.problems.OptimalTransport(a, b, M, 1e-3), method="sns")  # doctest: +SKIP
"""
from ._api import sinkhorn, sinkhorn2
from ._problem import OptimalTransport

__all__ = ["sinkhorn", "sinkhorn2", "OptimalTransport"]
