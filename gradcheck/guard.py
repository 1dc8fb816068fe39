"""What gradcheck accepts from a case and from the user's callables, and how it guards them.

A case's float arrays are used as given, not copied (only a non-contiguous array, or one of
another dtype, is converted); the engine never writes to them. A forward or vjp that
modifies an argument (or the upstream gradient) in place is caught by comparing CRC-32
checksums of the arrays' bytes before and after, which costs no memory (and half the time
of a SHA-1 digest: an accidental change, not an adversary, is what is looked for). Whatever
the forward or vjp raises or returns wrongly becomes ``Broken``: the case's status is
"error", with a message naming what misbehaved.
"""

from __future__ import annotations

import inspect
import traceback
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck.errors import InvalidCase
from gradcheck.settings import MODES


class Broken(Exception):
    """The forward or the formula misbehaved: the case's status is 'error'."""


def describe(out: Any) -> str:
    if isinstance(out, np.ndarray):
        return f"an array of shape {out.shape} and dtype {out.dtype}"
    return f"{type(out).__name__} {out!r:.80}"


def is_float(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind == "f"


def as_float_array(
    out: Any, who: str, shape: tuple[int, ...] | None, *, finite: bool = True
) -> np.ndarray:
    """``out`` as a float array of ``shape``; Broken if it is not one, or (``finite``) if it
    holds NaN or inf. At perturbed inputs non-finite values are let through: a step that
    leaves the forward's domain is the judge's business, not an error of the forward."""
    if not isinstance(out, (np.ndarray, np.generic, float)) or isinstance(out, bool):
        raise Broken(f"{who} returned {describe(out)}; expected a numpy float array")
    arr = np.asarray(out)
    if arr.dtype.kind != "f":
        raise Broken(f"{who} returned {describe(arr)}; expected a floating dtype")
    if shape is not None and arr.shape != shape:
        hint = " (transposed?)" if arr.shape == shape[::-1] and arr.ndim > 1 else ""
        raise Broken(f"{who} returned shape {arr.shape}; expected {shape}{hint}")
    if finite and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0]) if arr.ndim else ()
        raise Broken(f"{who} returned a non-finite value {arr[bad]!r} at index {bad}")
    return arr


def takes_positional(fn: Callable[..., Any]) -> bool:
    """A callable without keyword parameters (``np.tanh``, ``def f(x, /)``) is given the
    case's values in the case's order; any other is given them by name."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some C functions)
        return True
    return any(p.kind is p.POSITIONAL_ONLY for p in params)


def guard(fn: Callable[..., Any], who: str) -> Callable[..., Any]:
    positional = takes_positional(fn)

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            if positional:
                return fn(*args, *kwargs.values())
            return fn(*args, **kwargs)
        except Broken:
            raise
        except Exception as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            raise Broken(f"{who} raised {type(exc).__name__}: {exc}\n{''.join(tb[-3:])}") from exc

    return call


def prepare(
    case: Any, wrt: Any, mode: str, dtype: Any
) -> tuple[dict[str, Any], np.dtype, list[str]]:
    """The case with its float arrays contiguous and in the target dtype (shapes exactly as
    given, () included), that dtype, and notes on any cast; InvalidCase for anything
    unusable, naming the argument."""
    if not isinstance(case, Mapping):
        raise InvalidCase(f"case must be a dict of keyword arguments, got {type(case).__name__}")
    if not isinstance(wrt, str) or wrt not in case:
        raise InvalidCase(f"wrt={wrt!r} is not an argument of the case; it has {sorted(case)}")
    if mode not in MODES:
        raise InvalidCase(f"mode must be one of {MODES}, got mode={mode!r}")
    try:
        target = np.dtype(np.float64 if dtype is None else dtype)
    except TypeError as exc:
        raise InvalidCase(f"dtype must be a numpy float dtype, got dtype={dtype!r}") from exc
    if target not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidCase(f"dtype must be float32 or float64, got dtype={dtype!r}")
    x = case[wrt]
    if not is_float(x):
        raise InvalidCase(f"case[{wrt!r}] must be a numpy float array, got {describe(x)}")
    if x.size == 0:
        raise InvalidCase(f"case[{wrt!r}] is empty (shape {x.shape}); nothing to check")
    if not np.isfinite(x).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise InvalidCase(f"case[{wrt!r}] has a non-finite value {x[where]!r} at index "
                          f"{where}; expected finite floats")
    prepared, notes = dict(case), []
    for k, v in case.items():
        if is_float(v) and v.dtype != target:
            notes.append(f"{k} cast from {v.dtype} to {target}")
            prepared[k] = v.astype(target)
        elif is_float(v):  # used as given (the engine never writes to it); 0-d stays 0-d
            prepared[k] = np.asarray(v, order="C")
    return prepared, target, notes


def float_arrays(case: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in case.items() if is_float(v)}


def digests(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """A CRC-32 of each (C-contiguous) array's bytes: mutation is checked without a copy."""
    return {k: zlib.crc32(v.reshape(-1).view(np.uint8).data) for k, v in arrays.items()}


def unchanged(
    arrays: Mapping[str, np.ndarray], before: dict[str, int], who: str, what: str = "input"
) -> None:
    for k, digest in digests(arrays).items():
        if digest != before[k]:
            raise Broken(f"{who} modified its {what} {k!r} in place; it must not mutate arguments")

