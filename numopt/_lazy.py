"""Lazy public attributes for area packages, so ``import numopt`` loads no Numba, torch or scikit-learn."""
import importlib

__all__ = ["lazy_exports"]


def lazy_exports(package, lazy, public):
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    ``lazy`` maps an attribute name to the relative module (``"._altmin"``) it is imported from on first
    access; ``public`` is the package's ``__all__``.
    """
    def __getattr__(name):
        if name in lazy:
            return getattr(importlib.import_module(lazy[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(public)

    return __getattr__, __dir__
