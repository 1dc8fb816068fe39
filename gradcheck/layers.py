"""Layer objects, checked as they are written (the ``Layer`` declaration form).

``build(**config)`` makes the object from the case's entries that are neither inputs nor
parameters; each parameter is set on it from the case through its accessor (a dotted
path, or a getter/setter pair); ``forward`` runs on it. Every evaluation builds a fresh
object, so no state leaks from one evaluation to the next, unless the declaration says
``reusable=True``: then the object is built once per configuration and only its
parameters are set again. The backward always runs on a fresh object, right after a
forward of its own, and must leave the parameters as they were. Formulas compile through
``gradcheck.forms`` like those of the other forms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.declare import Derivation
from gradcheck.forms import compile_formula, digest
from gradcheck.outputs import (
    ZERO_UPSTREAM,
    identifiers,
    split_case,
    untouched_zeros,
    upstream,
)

__all__ = ["Access", "Layer", "path"]


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
    that changes the next forward, so evaluations reuse one object per configuration (a
    layer drawing a dropout mask from its own generator is not: declared reusable, it is
    reported as a nondeterministic forward).
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
        self.inputs = identifiers(f"{name}: inputs", inputs)
        if isinstance(params, str):
            params = (params,)
        specs = dict(params) if isinstance(params, Mapping) else {p: p for p in params}
        if specs:  # each an identifier (a case entry and a formula id), none twice
            identifiers(f"{name}: params", tuple(specs))
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
        for p, a in self.params.items():  # the backward's object gets copies: an in-place
            a.set(layer, np.array(case[p]) if fresh else case[p])  # update must show
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
