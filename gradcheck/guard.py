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

import contextlib
import inspect
import traceback
import weakref
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


_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[inspect.Parameter, ...] | None] = (
    weakref.WeakKeyDictionary())


def _parameters(fn: Callable[..., Any]) -> tuple[inspect.Parameter, ...] | None:
    """fn's parameters (None: names that say nothing), read once per callable: the
    engine calls a forward 2n + 2 times per case and reading a signature costs ~10 us.
    The cache holds callables weakly: a closure and the arrays it captures are not kept."""
    try:
        return _SIGNATURES[fn]
    except (KeyError, TypeError):  # not read yet, or not weakly referable: read it
        params = _read_parameters(fn)
    with contextlib.suppress(TypeError):
        _SIGNATURES[fn] = params
    return params


def _read_parameters(fn: Callable[..., Any]) -> tuple[inspect.Parameter, ...] | None:
    if isinstance(fn, np.ufunc):
        return None
    try:
        return tuple(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some C functions)
        return None


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def case_inputs(
    name: str, who: str, params: list[inspect.Parameter], wrt: Any, skip: Any = ()
) -> tuple[list[str], list[str]]:
    """(inputs, checked) of a framework function whose parameters are the case's keys:
    every parameter must be a named positional one; ``wrt`` (None: the inputs without a
    default, less the indices in ``skip``) must name inputs. For the torch and jax adapters."""
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            raise ValueError(f"{who}: the function's inputs must be named positional "
                             f"parameters (the case's keys), got {p}")
    names = [p.name for p in params]
    chosen = [p.name for i, p in enumerate(params) if p.default is p.empty and i not in skip] \
        if wrt is None else list(wrt)
    for w in chosen:
        if w not in names:
            raise ValueError(f"{name}: wrt names {w!r}, which is not an input of {who}; its "
                             f"inputs are {names}")
    return names, chosen


def bind(fn: Callable[..., Any], head: tuple[Any, ...], case: Mapping[str, Any],
         who: str = "callable") -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) calling ``fn(*head, ...)`` with the case's values bound by name.

    ``head`` (the upstream gradient of a vjp) fills the first positional parameters. Every
    other parameter with a name gets the case's value of that name: positional-only ones
    positionally, in the signature's order, the rest by keyword (all remaining values go
    to a ``**kwargs``). A callable whose parameter names say nothing (``np.tanh``, or one
    with no readable signature) gets the values by position, which is unambiguous only
    when the case holds one value; with several it is an error (wrap it in a lambda)."""
    params = _parameters(fn)
    if params is None:
        if len(case) == 1:
            return (*head, *case.values()), {}
        names = ", ".join(case)
        raise Broken(
            f"{who} {_name(fn)} has no parameter names to bind the case's {len(case)} values "
            f"({names}) to, and their order is not reliable; wrap it, e.g. "
            f"lambda {', '.join((['dy'] if head else []) + list(case))}: "
            f"{_name(fn)}({', '.join((['dy'] if head else []) + list(case))})")
    rest = dict(case)
    args: list[Any] = list(head)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for p in positional[len(head):]:
        if p.kind is not p.POSITIONAL_ONLY:
            break
        if p.name in rest:
            args.append(rest.pop(p.name))
            continue
        later = [q.name for q in positional if q.kind is q.POSITIONAL_ONLY and q.name in rest]
        if p.default is p.empty or later:
            raise Broken(f"{who} {_name(fn)} has the positional-only parameter {p.name!r}, "
                         f"which the case does not have (it has {sorted(case)}); name the "
                         "parameters as the case does, or wrap it in a lambda")
        break
    return tuple(args), rest


def guard(fn: Callable[..., Any], who: str) -> Callable[..., Any]:
    def call(*head: Any, **case: Any) -> Any:
        args, kwargs = bind(fn, head, case, who)
        try:
            return fn(*args, **kwargs)
        except Broken:
            raise
        except Exception as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            raise Broken(f"{who} raised {type(exc).__name__}: {exc}\n{''.join(tb[-3:])}") from exc

    return call


def check_options(seed: Any, directions: Any, budget: Any, max_exhaustive: Any) -> None:
    """InvalidCase naming the option, its bound and its value, for check_vjp's integers."""
    bounds = (("seed", seed, 0), ("directions", directions, 1), ("budget", budget, 1),
              ("max_exhaustive", max_exhaustive, 0))
    for name, value, low in bounds:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise InvalidCase(f"{name} must be an integer >= {low}, got {name}={value!r}")
        if value < low:
            raise InvalidCase(f"{name} must be >= {low}, got {name}={value!r}")


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

