"""Declaration forms for layer code as it is written, compiled to what the engine checks:
a forward of keyword arrays returning one array, and one vjp per argument (``Formula.vjp``).

* **Several outputs**, ``Derivation(..., outputs=("h", "c"))``: see gradcheck/outputs.py.
* **Layer objects**, ``Layer(...)``: see gradcheck/layers.py.
* **One backward for several arguments**, ``d.backward(("q", "k", "v"), fn)`` (this
  module): ``fn`` returns a tuple in that order or a dict by name (other entries are
  ignored); each argument is reported as its own formula (``attention.dq[fast]``), whose
  vjp is a ``Part`` of one ``Backward``. One call serves every formula of a case: its
  gradients are kept, keyed by a hash of the case and of the upstream gradient, until each
  formula has taken its own, within SHARED_BYTES (oldest dropped first). With one seed,
  hypothesis draws the same first cases, and the engine the same upstream gradient, for
  each formula of a derivation; once their runs diverge (its targeting follows each
  formula's own errors), a case is computed again. A formula declared with ``formula()``
  on a derivation of another form is a one-argument ``Backward``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.declare import Derivation
from gradcheck.outputs import (
    Flattened,
    call_user,
    identifiers,
    split_case,
    untouched_zeros,
    upstream,
)

__all__ = ["SHARED_BYTES", "Backward", "Part", "compile_formula", "digest", "register_backward"]

SHARED_BYTES = 64 * 2**20  # gradients kept for the other formulas of one backward call


# ---------------------------------------------------------------- hashing


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
    else:
        h.update(repr(value).encode())


def digest(arrays: Mapping[str, Any], *extra: np.ndarray) -> bytes:
    """A hash of a case's entries (array bytes, shape and dtype; repr of the rest)."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(arrays):
        h.update(k.encode() + b"\0")
        _feed(h, arrays[k])
    for v in extra:
        _feed(h, v)
    return h.digest()


# ---------------------------------------------------------------- one backward, several gradients


@dataclass
class _Kept:
    grads: dict[str, Any]
    nbytes: int
    served: set[str]


class _Store:
    """Gradients computed for one formula, kept for the others of the same backward call."""

    def __init__(self, budget: int) -> None:
        self.budget, self.nbytes = budget, 0
        self.entries: OrderedDict[tuple[int, bytes], _Kept] = OrderedDict()

    def take(self, key: tuple[int, bytes], name: str, everyone: int) -> Any:
        kept = self.entries.get(key)
        if kept is None:
            return None
        kept.served.add(name)
        if len(kept.served) >= everyone:
            self._drop(key)
        value = kept.grads.get(name)
        return value.copy() if isinstance(value, np.ndarray) else value

    def keep(self, key: tuple[int, bytes], grads: dict[str, Any], name: str) -> None:
        grads = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                 for k, v in grads.items()}
        nbytes = sum(v.nbytes for v in grads.values() if isinstance(v, np.ndarray))
        if nbytes > self.budget:
            return
        while self.nbytes + nbytes > self.budget:
            self._drop(next(iter(self.entries)))
        self.entries[key] = _Kept(grads, nbytes, {name})
        self.nbytes += nbytes

    def _drop(self, key: tuple[int, bytes]) -> None:
        self.nbytes -= self.entries.pop(key).nbytes


SHARED = _Store(SHARED_BYTES)
_TOKENS = itertools.count()  # one per Backward: an id() could be reused after collection


class Backward:
    """One user backward for the arguments ``names`` of a derivation: calls it and gives
    each argument's formula its gradient, one call per case and upstream gradient."""

    def __init__(self, d: Derivation, names: tuple[str, ...], fn: Callable[..., Any],
                 *, bare: bool = False) -> None:
        self.d, self.names, self.fn, self.bare = d, names, fn, bare
        self.token = next(_TOKENS)
        self.calls = 0  # how often the user's backward ran (for tests and benchmarks)

    def part(self, name: str) -> Part:
        return Part(self, name)

    def gradient(self, name: str, g: np.ndarray, case: dict[str, Any]) -> Any:
        if len(self.names) == 1:
            return self._grads(g, case)[name]
        key = (self.token, digest(case, g))
        cached = SHARED.take(key, name, len(self.names))
        if cached is not None:
            return cached
        grads = self._grads(g, case)
        if digest(case, g) == key[1]:  # nothing mutated: the result stands for the others
            SHARED.keep(key, grads, name)
        return grads[name]

    def _grads(self, g: np.ndarray, case: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return self._by_name(call_backward(self.d, self.fn, g, case))

    def _by_name(self, out: Any) -> dict[str, Any]:
        names = self.names
        if self.bare:
            return {names[0]: out}
        if isinstance(out, Mapping):
            missing = [n for n in names if n not in out]
            if missing:
                raise ValueError(f"{self.d.name}: the backward's dict has no gradient for "
                                 f"{missing}; it has {sorted(out)}")
            return {n: out[n] for n in names}
        if isinstance(out, (tuple, list)):
            if len(out) != len(names):
                raise ValueError(f"{self.d.name}: the backward returned {len(out)} gradients; "
                                 f"expected {len(names)}, for {names} in that order")
            return dict(zip(names, out, strict=True))
        if len(names) == 1:
            return {names[0]: out}
        raise ValueError(f"{self.d.name}: the backward returned {type(out).__name__}; expected "
                         f"a tuple of gradients for {names} in that order, or a dict by name")


class Part:
    """The engine's vjp for one argument of a ``Backward``: ``part(dy, **case)``."""

    def __init__(self, backward: Backward, name: str) -> None:
        self.backward, self.name = backward, name

    def __call__(self, *dy: np.ndarray, **case: Any) -> Any:
        """``part(dy, **case)``; ``*dy`` so that a case entry named 'dy' cannot clash, without a
        positional-only parameter (guard.py reads one as 'give me the case's values in order')."""
        (upstream,) = dy
        return self.backward.gradient(self.name, upstream, case)

    def __repr__(self) -> str:
        return f"<gradient of {self.name!r} from {self.backward.fn!r}>"


def call_backward(d: Derivation, fn: Callable[..., Any], g: np.ndarray,
                  case: dict[str, Any]) -> Any:
    """Run the user's backward on ``case``, in ``d``'s form, with upstream gradient ``g``."""
    run_backward = getattr(d, "run_backward", None)  # a layer object's own (layers.py)
    if run_backward is not None:
        return run_backward(fn, g, case)
    if d.outputs is None:
        return call_user(fn, g, case)
    user, zero = split_case(case)
    raw = d.forward.raw if isinstance(d.forward, Flattened) else d.forward
    dy = upstream(d, call_user(raw, None, user), g, zero)
    out = call_user(fn, dy, user)
    untouched_zeros(d, dy, zero)
    return out



def compile_formula(d: Derivation, wrt: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The engine's vjp for a formula declared on a derivation of another form."""
    return fn if isinstance(fn, Part) else Backward(d, (wrt,), fn, bare=True).part(wrt)


def register_backward(
    d: Derivation, wrt: Any, fn: Callable[..., Any] | None, **options: Any
) -> Any:
    """``Derivation.backward``: one formula per name in ``wrt``, all from one backward."""
    names = identifiers(f"{d.name}: wrt", wrt)
    expect = options.pop("expect", "pass")

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        shared = Backward(d, names, f)
        for name in names:
            mine = expect.get(name, "pass") if isinstance(expect, Mapping) else expect
            d.formula(name, shared.part(name), expect=mine, **options)
        return f

    return register if fn is None else register(fn)
