"""Declaration forms for layer code as it is written: one backward returning several
gradients, forwards with several outputs, and layer objects with state and parameters.

Every form compiles, here at the declaration layer, to what the engine checks: a forward
of keyword arrays returning one array, and one vjp per argument (``Formula.vjp``).

* **Several outputs** (``Derivation(..., outputs=("h", "c"))``): the forward returns a
  tuple in that order or a dict by those names. The compiled forward returns the outputs
  flattened and laid end to end, so the engine's upstream gradient ``g`` is one array per
  output and its ``L = <g, y>`` is ``sum_k <g_k, y_k>``. The backward receives ``dy`` in
  the structure the forward returns (a tuple or a dict), each ``g_k`` shaped like ``y_k``.
  Besides the user's entries a case draws which outputs get a zero upstream gradient
  (``zero_upstream="c"`` among its parameters; never all of them, and none in about half
  the cases): the compiled forward returns zeros in their place, which is exactly L with
  ``g_k = 0``, and the backward receives zeros there.
* **One backward for several arguments** (``d.backward(("q", "k", "v"), fn)``): ``fn``
  returns a tuple in that order or a dict by name (other entries are ignored); each
  argument is reported as its own formula (``attention.dq[fast]``). One call serves every
  formula of a case: its gradients are kept, keyed by a hash of the case and of the
  upstream gradient, until each formula has taken its own (with one seed, hypothesis draws
  the same cases, and the engine the same upstream, for each formula of a derivation),
  within SHARED_BYTES, oldest dropped first.
* **Layer objects** (``Layer(...)``): ``build(**config)`` makes the object from the case's
  entries that are neither inputs nor parameters; each parameter is set on it from the
  case through its accessor; ``forward`` runs on it. Every evaluation builds a fresh
  object, unless the declaration says ``reusable=True``: then the object is built once per
  configuration and only its parameters are set again. The backward always runs on a fresh
  object, right after a forward of its own, and must leave the parameters as they were.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck.declare import Derivation

__all__ = ["Access", "Layer", "SHARED_BYTES", "ZERO_UPSTREAM", "path"]

ZERO_UPSTREAM = "zero_upstream"  # the case entry naming the outputs whose upstream is zero
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


# ---------------------------------------------------------------- several outputs


def _names(what: str, names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, Iterable) or isinstance(names, Mapping):
        raise ValueError(f"{what} must be a tuple of names, got {what}={names!r}")
    out = tuple(names)
    if not out or not all(isinstance(n, str) and n.isidentifier() for n in out):
        raise ValueError(f"{what} must be a non-empty tuple of identifiers, got {what}={names!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} names an entry twice: {what}={names!r}")
    return out


def split_case(case: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The user's case, and the outputs whose upstream gradient is zero."""
    if ZERO_UPSTREAM not in case:
        return dict(case), frozenset()
    rest = {k: v for k, v in case.items() if k != ZERO_UPSTREAM}
    return rest, frozenset(str(case[ZERO_UPSTREAM]).split(","))


def outputs_of(d: Derivation, y: Any) -> list[np.ndarray]:
    """The forward's outputs in declared order, each a float array (ValueError otherwise)."""
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
        if not np.isfinite(arr).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{d.name}: output {name!r} has a non-finite value "
                             f"{arr[where]!r} at index {where}")
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
        ys = outputs_of(self.d, self.raw(**user))
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
    d.outputs = _names(f"{d.name}: outputs", d.outputs)
    if d.batched:
        raise ValueError(f"{d.name}: batched=True is not supported with several outputs "
                         "(each output's batch axis cannot be told from its own axes)")
    d.forward = Flattened(d, d.forward)
    d.cases = st.tuples(d.cases, _zeroed(d.outputs)).map(lambda cz: _with_zeroed(*cz))


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


class Backward:
    """One user backward for the arguments ``names`` of a derivation: calls it and gives
    each argument's formula its gradient, one call per case and upstream gradient."""

    def __init__(self, d: Derivation, names: tuple[str, ...], fn: Callable[..., Any],
                 *, bare: bool = False) -> None:
        self.d, self.names, self.fn, self.bare = d, names, fn, bare
        self.calls = 0  # how often the user's backward ran (for tests and benchmarks)

    def part(self, name: str) -> Part:
        return Part(self, name)

    def gradient(self, name: str, g: np.ndarray, case: dict[str, Any]) -> Any:
        if len(self.names) == 1:
            return self._grads(g, case)[name]
        key = (id(self), digest(case, g))
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

    def __call__(self, dy: np.ndarray, **case: Any) -> Any:
        return self.backward.gradient(self.name, dy, case)

    def __repr__(self) -> str:
        return f"<gradient of {self.name!r} from {self.backward.fn!r}>"


def call_backward(d: Derivation, fn: Callable[..., Any], g: np.ndarray,
                  case: dict[str, Any]) -> Any:
    """Run the user's backward on ``case``, in ``d``'s form, with upstream gradient ``g``."""
    if isinstance(d, Layer):
        return d.run_backward(fn, g, case)
    if d.outputs is None:
        return fn(g, **case)
    user, zero = split_case(case)
    raw = d.forward.raw if isinstance(d.forward, Flattened) else d.forward
    dy = upstream(d, raw(**user), g, zero)
    out = fn(dy, **user)
    untouched_zeros(d, dy, zero)
    return out


def compile_formula(d: Derivation, wrt: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The engine's vjp for a formula declared on a derivation of another form."""
    return fn if isinstance(fn, Part) else Backward(d, (wrt,), fn, bare=True).part(wrt)


def register_backward(
    d: Derivation, wrt: Any, fn: Callable[..., Any] | None, **options: Any
) -> Any:
    """``Derivation.backward``: one formula per name in ``wrt``, all from one backward."""
    names = _names(f"{d.name}: wrt", wrt)
    expect = options.pop("expect", "pass")

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        shared = Backward(d, names, f)
        for name in names:
            mine = expect.get(name, "pass") if isinstance(expect, Mapping) else expect
            d.formula(name, shared.part(name), expect=mine, **options)
        return f

    return register if fn is None else register(fn)


# ---------------------------------------------------------------- layer objects


@dataclass(frozen=True)
class Access:
    """How a parameter is read from and written to a layer object; ``where`` names it."""

    get: Callable[[Any], Any]
    set: Callable[[Any, Any], None]
    where: str


def _step(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def path(spec: str) -> Access:
    """``"W"`` is ``layer.W``; ``"params.W"`` is ``layer.params["W"]`` when ``layer.params``
    is a mapping, else ``layer.params.W``; and so on down a dotted path."""
    parts = spec.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError(f"a parameter path is dotted identifiers, got {spec!r}")

    def parent(layer: Any) -> Any:
        for p in parts[:-1]:
            layer = _step(layer, p)
        return layer

    def set_(layer: Any, value: Any) -> None:
        obj = parent(layer)
        if isinstance(obj, MutableMapping):
            obj[parts[-1]] = value
        else:
            setattr(obj, parts[-1], value)

    return Access(lambda layer: _step(parent(layer), parts[-1]), set_, f"layer.{spec}")


def _access(name: str, spec: Any) -> Access:
    if isinstance(spec, Access):
        return spec
    if isinstance(spec, str):
        return path(spec)
    if isinstance(spec, Sequence) and len(spec) == 2 and all(map(callable, spec)):
        return Access(spec[0], spec[1], f"parameter {name!r}")
    raise ValueError(f"parameter {name!r}: expected a dotted path, a (getter, setter) pair or "
                     f"an Access, got {spec!r}")


class Layer(Derivation):
    """A layer object, checked as it is written.

    ``build(**config)`` makes the object from the case's entries that are neither
    ``inputs`` nor ``params``; ``params`` names the parameters (``("W", "b")`` for
    ``layer.W`` and ``layer.b``, or ``{"W": "params.W"}``, or ``{"W": (getter, setter)}``);
    a case may draw them or leave them out, and then they are the values a fresh object is
    built with. ``forward`` is a method name (called with the inputs in order) or
    ``forward(layer, *inputs)``. Backwards are registered as ``fn(layer, dy)`` returning
    the gradients (``layer.backward(("x", "W"), lambda layer, dy: (layer.backward(dy),
    layer.dW))``). ``reusable=True`` declares that a forward leaves nothing on the object
    that changes the next forward, so evaluations reuse one object per configuration.
    """

    def __init__(
        self,
        name: str,
        build: Callable[..., Any],
        *,
        cases: Any,
        inputs: Any,
        params: Any = (),
        forward: str | Callable[..., Any] = "forward",
        reusable: bool = False,
        **options: Any,
    ) -> None:
        if options.get("batched"):
            raise ValueError(f"{name}: a Layer evaluates one input at a time; batched=True "
                             "is not supported (reusable=True saves the rebuilding)")
        self.build, self.reusable = build, bool(reusable)
        self.inputs = _names(f"{name}: inputs", inputs)
        specs = params if isinstance(params, Mapping) else {p: p for p in params}
        self.params = {p: _access(p, s) for p, s in specs.items()}
        self.run_forward = forward if callable(forward) else (
            lambda layer, *xs: getattr(layer, forward)(*xs))
        self._kept: tuple[bytes, Any] | None = None
        super().__init__(name, self._forward, cases=cases.map(self._fill), **options)

    def _vjp_of(self, wrt: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return compile_formula(self, wrt, fn)

    def config(self, case: Mapping[str, Any]) -> dict[str, Any]:
        skip = {*self.inputs, *self.params, ZERO_UPSTREAM}
        return {k: v for k, v in case.items() if k not in skip}

    def _build(self, case: Mapping[str, Any]) -> Any:
        return self.build(**self.config(case))

    def _fill(self, case: Any) -> Any:
        """A case without some parameters gets the values a fresh object is built with."""
        if not isinstance(case, Mapping) or all(p in case for p in self.params):
            return case
        layer, filled = self._build(case), {}
        for p, a in self.params.items():
            if p not in case:
                try:
                    filled[p] = np.array(a.get(layer))
                except (AttributeError, KeyError) as exc:
                    raise ValueError(f"{self.name}: the case has no {p!r}, and a layer built "
                                     f"from it has no {a.where} to take it from") from exc
        return {**case, **filled}

    def obj(self, case: Mapping[str, Any], *, fresh: bool = False) -> Any:
        """The layer for ``case`` with its parameters set from the case."""
        if self.reusable and not fresh:
            key = digest(self.config(case))
            if self._kept is None or self._kept[0] != key:
                self._kept = (key, self._checked(self._build(case), case))
            layer = self._kept[1]
        else:
            layer = self._checked(self._build(case), case)
        for p, a in self.params.items():
            a.set(layer, case[p])
        return layer

    def _checked(self, layer: Any, case: Mapping[str, Any]) -> Any:
        for p, a in self.params.items():
            try:
                built, given = np.shape(a.get(layer)), np.shape(case[p])
            except (AttributeError, KeyError):  # set from the case only
                continue
            if built != given:
                raise ValueError(f"{self.name}: case[{p!r}] has shape {given}, but the built "
                                 f"layer's {a.where} has shape {built}")
        return layer

    def _forward(self, **case: Any) -> Any:
        layer = self.obj(case)
        return self.run_forward(layer, *(case[i] for i in self.inputs))

    def run_backward(self, fn: Callable[..., Any], g: np.ndarray, case: dict[str, Any]) -> Any:
        """A fresh object, its forward, then ``fn(layer, dy)`` on that same object."""
        user, zero = split_case(case)
        layer = self.obj(user, fresh=True)
        y = self.run_forward(layer, *(user[i] for i in self.inputs))
        dy = upstream(self, y, g, zero)
        out = fn(layer, dy)
        untouched_zeros(self, dy, zero)
        for p, a in self.params.items():
            if not np.array_equal(a.get(layer), user[p]):
                raise ValueError(f"{self.name}: the backward changed the parameter {p!r} "
                                 f"({a.where}); it must leave parameters as they were (an "
                                 "update step belongs outside the backward)")
        return out
