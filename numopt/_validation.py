"""Shared input checks used by every public entry point.

Compiled kernels run without bounds checks, so everything that crosses the public boundary is checked
here first. Every message names the argument and the offending value or shape.

dtype policy: float32 and float64 are kept as they are; bool/integer input becomes float64;
complex, object and string input raise ``TypeError``.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, aslinearoperator

__all__ = [
    "as_float_array",
    "as_matrix",
    "as_operator",
    "check_finite",
    "check_positive",
    "check_int",
    "check_indices",
    "check_probability_vector",
    "check_random_state",
    "check_bool",
    "check_choice",
    "result_dtype",
]

_FLOATS = (np.float32, np.float64)


def _float_dtype(dtype, name, dtype_policy=None):
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        out = np.dtype(np.float64)
    elif dtype.kind == "f":
        out = dtype if dtype.type in _FLOATS else np.dtype(np.float64)
    else:
        raise TypeError(f"{name} must hold real numbers (float32/float64/int/bool); got dtype {dtype}")
    if dtype_policy is not None:
        out = np.dtype(dtype_policy)
    return out


def result_dtype(*arrays):
    """The common float dtype (float32 only if every input is float32)."""
    return np.result_type(*[np.dtype(a.dtype) for a in arrays], np.float32)


def as_float_array(x, name, *, ndim=None, shape=None, dtype=None, allow_nan=False, allow_inf=False,
                   copy=False, min_size=0, contiguous=True):
    """Coerce ``x`` to a C-contiguous float32/float64 ndarray and check it.

    Parameters
    ----------
    x : array_like
    name : str
        Argument name used in error messages.
    ndim : int or tuple of int, optional
        Accepted number(s) of dimensions.
    shape : tuple, optional
        Expected shape; ``None`` entries match any length.
    dtype : dtype, optional
        Force this float dtype; default keeps float32/float64 and maps int/bool to float64.
    allow_nan, allow_inf : bool
        Whether NaN / ±inf entries are accepted.
    min_size : int
        Minimum number of elements.
    """
    if sp.issparse(x):
        raise TypeError(f"{name} must be a dense array, got a sparse {type(x).__name__}")
    if isinstance(x, LinearOperator):
        raise TypeError(f"{name} must be a dense array, got a LinearOperator")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric; got an object array (ragged or mixed input?)")
    out_dtype = _float_dtype(arr.dtype, name, dtype)
    arr = np.array(arr, dtype=out_dtype, order="C" if contiguous else "K", copy=copy or None)
    if ndim is not None:
        ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in ndims:
            raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimension(s); got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ValueError(f"{name} must have shape {_fmt_shape(shape)}; got {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name} must have at least {min_size} element(s); got {arr.size}")
    check_finite(arr, name, allow_nan=allow_nan, allow_inf=allow_inf)
    return arr


def _fmt_shape(shape):
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_finite(arr, name, *, allow_nan=False, allow_inf=False):
    """Raise ``ValueError`` if ``arr`` (dense or sparse) holds NaN/inf that are not allowed."""
    data = arr.data if sp.issparse(arr) else arr
    if allow_nan and allow_inf:
        return arr
    if data.size and data.dtype.kind == "f":
        # fast path, two reductions without temporaries: min and max propagate NaN, so both finite means
        # every entry is finite
        with np.errstate(invalid="ignore"):
            if np.isfinite(data.min()) and np.isfinite(data.max()):
                return arr
    if not allow_nan and np.isnan(data).any():
        raise ValueError(f"{name} contains NaN")
    if not allow_inf and np.isinf(data).any():
        raise ValueError(f"{name} contains infinite values")
    return arr


def as_matrix(A, name, *, square=False, sparse_format=None, dtype=None, allow_sparse=True, allow_nan=False,
              shape=None):
    """Check a 2-D dense array or ``scipy.sparse`` matrix/array.

    Dense input comes back as a C-contiguous float ndarray; sparse input as a ``scipy.sparse`` matrix in
    ``sparse_format`` (``"csr"``, ``"csc"``; default: keep), with sorted, de-duplicated indices
    and a float dtype.
    """
    if isinstance(A, LinearOperator):
        raise TypeError(f"{name} must be a dense array or scipy.sparse matrix, not a LinearOperator")
    if sp.issparse(A):
        if not allow_sparse:
            raise TypeError(f"{name} must be a dense array; got sparse {type(A).__name__}")
        if A.ndim != 2:
            raise ValueError(f"{name} must be 2-D; got shape {A.shape}")
        out_dtype = _float_dtype(A.dtype, name, dtype)
        fmt = sparse_format or A.format
        if fmt not in ("csr", "csc"):
            fmt = "csr"
        A = A.asformat(fmt).astype(out_dtype, copy=False)
        if not A.has_canonical_format:
            A = A.copy()
            A.sum_duplicates()
        if A.indices.dtype != np.int32 and A.nnz < np.iinfo(np.int32).max and max(A.shape) < np.iinfo(np.int32).max:
            A = A.copy()
            A.indices = A.indices.astype(np.int32)
            A.indptr = A.indptr.astype(np.int32)
        check_finite(A, name, allow_nan=allow_nan)
    else:
        A = as_float_array(A, name, ndim=2, dtype=dtype, allow_nan=allow_nan)
    if shape is not None and any(s is not None and s != a for s, a in zip(shape, A.shape)):
        raise ValueError(f"{name} must have shape {_fmt_shape(shape)}; got {A.shape}")
    if square and A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square; got shape {A.shape}")
    if 0 in A.shape:
        raise ValueError(f"{name} must be non-empty; got shape {A.shape}")
    return A


def as_operator(A, name, *, square=True):
    """Accept a dense array, ``scipy.sparse`` matrix or ``LinearOperator``.

    Returns ``(A_checked, op)``: the checked matrix (or the operator itself) and a ``LinearOperator``.
    """
    if isinstance(A, LinearOperator):
        if len(A.shape) != 2:
            raise ValueError(f"{name} must be 2-D; got shape {A.shape}")
        if square and A.shape[0] != A.shape[1]:
            raise ValueError(f"{name} must be square; got shape {A.shape}")
        if np.dtype(A.dtype).kind == "c":
            raise TypeError(f"{name} must be real; got dtype {A.dtype}")
        return A, A
    if not (sp.issparse(A) or hasattr(A, "__array__") or isinstance(A, (list, tuple))):
        raise TypeError(f"{name} must be an array, scipy.sparse matrix or LinearOperator; got {type(A).__name__}")
    A = as_matrix(A, name, square=square, sparse_format="csr")
    return A, aslinearoperator(A)


def check_positive(value, name, *, strict=True, allow_inf=False):
    """Check a real scalar is > 0 (``strict``) or >= 0; returns it as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number; got {value!r} of type {type(value).__name__}")
    value = float(value)
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if (strict and value <= 0) or (not strict and value < 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}; got {value!r}")
    return value


def check_int(value, name, *, min_value=None, max_value=None, allow_none=False):
    """Check an integer option (bools rejected); returns it as int."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}") from None
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}; got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}; got {value}")
    return value


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}; got {value!r}")
    return value


def check_indices(idx, name, upper, *, ndim=1):
    """Check integer indices lie in ``[0, upper)``; returns an int64 array."""
    arr = np.asarray(idx)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise TypeError(f"{name} must hold integers; got non-integral values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= upper:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} has index {bad} out of range [0, {upper})")
    return arr


def check_probability_vector(a, name, *, n=None, atol=1e-6):
    """A nonnegative, finite 1-D vector (histogram) with positive total mass."""
    a = as_float_array(a, name, ndim=1, min_size=1)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have length {n}; got {a.shape[0]}")
    if np.any(a < 0):
        raise ValueError(f"{name} must be nonnegative; min is {a.min()!r}")
    if a.sum() <= 0:
        raise ValueError(f"{name} must have positive total mass")
    return a


def check_random_state(seed):
    """Turn ``None``/int/Generator/RandomState into a ``numpy.random.Generator``."""
    if seed is None or isinstance(seed, (numbers.Integral, np.integer)):
        if seed is not None and int(seed) < 0:
            raise ValueError(f"random_state must be >= 0; got {seed}")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator; got {type(seed).__name__}")
