"""Forwards with several outputs, compiled to the one-array forward the engine checks.

A derivation declared with ``outputs=("h", "c")`` has a forward returning a tuple in that
order or a dict by those names. The compiled forward (``Flattened``) returns the outputs
flattened and laid end to end, so the engine's upstream gradient ``g`` is one array per
output and its ``L = <g, y>`` is ``sum_k <g_k, y_k>``. The backward receives ``dy`` in the
structure the forward returns (a tuple or a dict), each ``g_k`` a view of ``g`` shaped like
``y_k`` (so that a backward writing into it is caught). Besides the user's entries a case
draws which outputs get a zero upstream gradient (``zero_upstream="c"`` among its
parameters; never all of them, and none in about half the cases): the compiled forward
returns zeros in their place, which is exactly L with ``g_k = 0``, and the backward
receives zeros there, which it must leave as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck.declare import Derivation
from gradcheck.guard import bind

__all__ = ["ZERO_UPSTREAM", "Flattened", "several_outputs"]

ZERO_UPSTREAM = "zero_upstream"  # the case entry naming the outputs whose upstream is zero


def identifiers(what: str, names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, Iterable) or isinstance(names, Mapping):
        raise ValueError(f"{what} must be a tuple of names, got {what}={names!r}")
    out = tuple(names)
    if not out or not all(isinstance(n, str) and n.isidentifier() for n in out):
        raise ValueError(
            f"{what} must be a non-empty tuple of identifiers, got {what}={names!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} names an entry twice: {what}={names!r}")
    return out


def call_user(fn: Callable[..., Any], first: Any, case: dict[str, Any]) -> Any:
    """As the engine calls a user's function: ``guard.bind`` (by name, positional-only
    parameters included; by position only for ``np.tanh``-like callables)."""
    args, kwargs = bind(fn, () if first is None else (first,), case)
    return fn(*args, **kwargs)


def split_case(case: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The user's case, and the outputs whose upstream gradient is zero."""
    if ZERO_UPSTREAM not in case:
        return dict(case), frozenset()
    rest = {k: v for k, v in case.items() if k != ZERO_UPSTREAM}
    return rest, frozenset(str(case[ZERO_UPSTREAM]).split(","))


def outputs_of(d: Derivation, y: Any) -> list[np.ndarray]:
    """The forward's outputs in declared order, each a float array (ValueError otherwise).
    Non-finite values pass: at a perturbed input they are the judge's (a step that left the
    domain), and at the case itself the engine's output check names them."""
    names = d.outputs or ()
    want = f"a tuple of {len(names)} arrays {names} or a dict with those keys"
    if isinstance(y, Mapping):
        if set(y) != set(names):
            raise ValueError(f"{d.name}: forward returned a dict with keys {sorted(y)}; "
                             f"expected {want}")
        ys = [y[n] for n in names]
    elif isinstance(y, (tuple, list)) and len(y) == len(names):
        ys = list(y)
    else:
        got = f"{len(y)} values" if isinstance(y, (tuple, list)) else type(y).__name__
        raise ValueError(f"{d.name}: forward returned {got}; expected {want}")
    out = []
    for name, v in zip(names, ys, strict=True):
        arr = np.asarray(v)
        if arr.dtype.kind != "f":
            raise ValueError(f"{d.name}: output {name!r} has dtype {arr.dtype}; expected floats")
        out.append(arr)
    return out


def upstream(d: Derivation, y: Any, g: np.ndarray, zero: frozenset[str]) -> Any:
    """``dy`` for the backward, in the structure of the forward's outputs ``y``: views of
    ``g`` (so that a backward writing into them is caught), zeros where zeroed."""
    if d.outputs is None:
        return g
    parts, start = {}, 0
    for name, yk in zip(d.outputs, outputs_of(d, y), strict=True):
        stop = start + yk.size
        parts[name] = (np.zeros(yk.shape, g.dtype) if name in zero
                       else g.reshape(-1)[start:stop].reshape(yk.shape))
        start = stop
    if start != g.size:
        raise ValueError(f"{d.name}: the upstream gradient has {g.size} elements; the "
                         f"outputs {d.outputs} have {start}")
    return parts if isinstance(y, Mapping) else tuple(parts[n] for n in d.outputs)


def untouched_zeros(d: Derivation, dy: Any, zero: frozenset[str]) -> None:
    for name in zero:
        part = dy[name] if isinstance(dy, Mapping) else dy[(d.outputs or ()).index(name)]
        if np.any(part != 0):
            raise ValueError(f"{d.name}: the backward modified its upstream gradient "
                             f"{name!r} in place; it must not mutate arguments")


class Flattened:
    """The engine's forward for several outputs: one array, the outputs end to end."""

    def __init__(self, d: Derivation, raw: Callable[..., Any]) -> None:
        self.d, self.raw = d, raw

    def __call__(self, **case: Any) -> np.ndarray:
        user, zero = split_case(case)
        ys = outputs_of(self.d, call_user(self.raw, None, user))
        dtype = np.result_type(*ys)
        return np.concatenate([
            np.zeros(y.size, dtype) if n in zero else y.reshape(-1)
            for n, y in zip(self.d.outputs or (), ys, strict=True)
        ])


def _zeroed(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    proper = [",".join(c) for k in range(1, len(names)) for c in combinations(names, k)]
    return st.one_of(st.just(""), st.sampled_from(proper)) if proper else st.just("")


def _with_zeroed(case: Any, zero: str) -> Any:
    if not isinstance(case, Mapping) or not zero:
        return case
    if ZERO_UPSTREAM in case:
        raise ValueError(f"a case of a derivation with several outputs may not have an "
                         f"entry {ZERO_UPSTREAM!r} (gradcheck draws it); got {sorted(case)}")
    return {**case, ZERO_UPSTREAM: zero}


def several_outputs(d: Derivation) -> None:
    """Compile a derivation with ``outputs``: one-array forward, cases with zeroed outputs."""
    d.outputs = identifiers(f"{d.name}: outputs", d.outputs)
    if d.batched:
        raise ValueError(f"{d.name}: batched=True is not supported with several outputs "
                         "(each output's batch axis cannot be told from its own axes)")
    d.forward = Flattened(d, d.forward)
    d.cases = st.tuples(d.cases, _zeroed(d.outputs)).map(lambda cz: _with_zeroed(*cz))
