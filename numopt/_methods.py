"""The method registry: one table maps a method name to its solver.

Adding a method touches one row of :data:`METHODS`. A solver is a plain function:

* ``kind="minimize"``: ``solver(problem, x0, *, callback=None, <options with defaults>)``
  where ``problem`` is an instance of one of the classes named in ``problems`` (``"FunctionProblem"``
  wraps a SciPy-style ``fun``/``jac``).
* ``kind="solve"``: ``solver(A, b, x0, *, rtol, atol, maxiter, M, callback, <options with defaults>)``
  with ``A`` already checked (dense, CSR or ``LinearOperator``) and ``b`` a float vector.

The keyword-only parameters of the solver, with their defaults, *are* the method's options:
:func:`show_options` prints them with the solver's docstring, and unknown names raise ``ValueError``.
Solvers are imported lazily, so ``import numopt`` stays cheap and optional extras (torch, dask)
are only needed by the methods that use them.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

__all__ = ["Method", "METHODS", "get_method", "show_options", "list_methods"]


@dataclass(frozen=True)
class Method:
    name: str
    kind: str               # "minimize" or "solve"
    target: str             # "module:function"
    problems: tuple = ()    # accepted problem class names (minimize only)
    summary: str = ""

    def load(self):
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)

    def option_defaults(self):
        """``{option: default}`` from the solver's keyword-only parameters."""
        sig = inspect.signature(self.load())
        reserved = _RESERVED[self.kind]
        return {n: p.default for n, p in sig.parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in reserved}


_RESERVED = {
    "minimize": {"callback"},
    "solve": {"rtol", "atol", "maxiter", "M", "callback"},
}

_OT = ("OptimalTransport",)
_BCD = ("LeastSquares", "Logistic", "MultinomialLogistic", "LabelPropagation", "Quadratic", "FunctionProblem")
_MC = ("MatrixCompletion", "DaskMatrixCompletion")
_RELU = ("TwoLayerReLU",)

METHODS = {m.name: m for m in [
    # --- sparse SPD linear systems --------------------------------------------------------------
    Method("cg", "solve", "numopt.linalg._cg:solve_cg", summary="Conjugate gradients (SciPy semantics, compiled loop)"),
    Method("pcg", "solve", "numopt.linalg._cg:solve_pcg",
           summary="Preconditioned CG; M = 'ic0' (default), 'jacobi', or any LinearOperator"),
    Method("dcdm", "solve", "numopt.linalg._dcdm:solve_dcdm",
           summary="Deep Conjugate Direction Method (torch CNN directions, A-orthogonalized)"),
    # --- entropic optimal transport -------------------------------------------------------------
    Method("sns", "minimize", "numopt.ot._sns:minimize_sns", _OT,
           "Sinkhorn-Newton-Sparse: Sinkhorn warm start, then sparse Newton on the dual"),
    Method("sinkhorn_log", "minimize", "numopt.ot._sinkhorn:minimize_sinkhorn_log", _OT,
           "Compiled log-domain Sinkhorn"),
    Method("sinkhorn", "minimize", "numopt.ot._sinkhorn:minimize_sinkhorn", _OT,
           "Kernel-form Sinkhorn (fast at large reg)"),
    # --- block coordinate descent ---------------------------------------------------------------
    Method("bcd", "minimize", "numopt.bcd._bcd:minimize_bcd", _BCD,
           "Greedy block coordinate descent (GS rules, tree-Newton blocks, proximal active set)"),
    # --- matrix completion ----------------------------------------------------------------------
    Method("altmin", "minimize", "numopt.completion._altmin:minimize_altmin", _MC,
           "Robust alternating minimization with fast approximate least-squares half-steps"),
    # --- convex two-layer ReLU networks ---------------------------------------------------------
    Method("admm", "minimize", "numopt.relu._admm:minimize_admm", _RELU,
           "ADMM on the convex reformulation, pre-factorized u-step"),
    Method("admm-rbcd", "minimize", "numopt.relu._rbcd:minimize_admm_rbcd", _RELU,
           "ADMM with randomized block coordinate descent u-steps (no factorisation; large problems)"),
    Method("scp", "minimize", "numopt.relu._scp:minimize_scp", _RELU,
           "Sampled convex program by accelerated proximal gradient"),
]}


def list_methods(kind=None):
    """Names of the registered methods (optionally only ``"minimize"`` or ``"solve"``)."""
    return sorted(n for n, m in METHODS.items() if kind is None or m.kind == kind)


def get_method(name, kind=None):
    """Look up a method by name (case-insensitive), raising ``ValueError`` listing valid names."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string; got {type(name).__name__}")
    m = METHODS.get(name.lower())
    if m is None or (kind is not None and m.kind != kind):
        raise ValueError(f"unknown method {name!r} for {kind or 'numopt'}; valid methods: {list_methods(kind)}")
    return m


def check_options(method, options, kwargs=None):
    """Merge user options (the ``options`` dict and option keywords) over the defaults.

    Unknown names raise ``ValueError`` listing the valid ones; a name given both ways is an error.
    """
    defaults = method.option_defaults()
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict; got {type(options).__name__}")
    kwargs = kwargs or {}
    both = sorted(set(kwargs) & set(options))
    if both:
        raise ValueError(f"option(s) {both} given both in options and as keywords")
    options = {**options, **kwargs}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method.name!r}; valid options: {sorted(defaults)}")
    return {**defaults, **options}


def show_options(method=None, *, disp=True):
    """Print (and return) the documented options of ``method`` (all methods when ``None``)."""
    names = list_methods() if method is None else [get_method(method).name]
    parts = []
    for name in names:
        m = METHODS[name]
        solver = m.load()
        opts = m.option_defaults()
        lines = [f"{m.name} ({m.kind}): {m.summary}", "=" * (len(m.name) + len(m.kind) + 3 + len(m.summary)),
                 "Options (defaults):"]
        lines += [f"    {k} = {v!r}" for k, v in opts.items()]
        doc = inspect.getdoc(solver)
        if doc:
            lines += ["", doc]
        parts.append("\n".join(lines))
    text = "\n\n".join(parts)
    if disp:
        print(text)
    return text
