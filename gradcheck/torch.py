"""Checking torch code: a ``torch.autograd.Function``'s hand-written backward (or any function
of tensors whose graph holds one) through the engine, reports, CLI and plugin.

    gelu = Derivation.from_torch("gelu", FusedGELU, cases=gelu_cases())

The forward and the backward run as torch code on the device (CUDA when present, else the
CPU); hypothesis draws numpy cases, whose float arrays become tensors (sharing memory on
the CPU, in float64 unless the run or the declaration asks for float32; float32 by default
on CUDA) and whose other values (a stride, a flag, an integer index array) are passed as
they are. Each input that requires grad is a formula (``gelu.dx``). The differences are of
L = sum_k <g_k, y_k> over the floating outputs as the device computed them (copied to
host numpy); several outputs are laid end to end as one flat output. One forward and one
backward per case serve every input's formula (``Derivation.backward``).

Semantics are torch's, because torch runs it: ``apply`` then ``torch.autograd.grad``, so
``ctx.save_for_backward``, ``ctx.needs_input_grad`` (every checked input requires grad),
``mark_non_differentiable`` (that output gets no upstream gradient, yet stays in L: a float
output wrongly marked non-differentiable fails) and ``once_differentiable`` behave as in
training. The backward is called through a subclass that looks at what it returns before
torch does, so that what torch would fix silently or report vaguely is an error naming the
Function, the input and what was expected: the wrong number of gradients, None for an input
that requires grad, a gradient of the wrong dtype, shape or device, a write into
``grad_output`` or into a saved tensor.

Batched evaluation: the engine's chunks of perturbed inputs are evaluated through
``torch.vmap`` over the forward's own code (its values need no autograd bookkeeping, and
vmap over ``apply`` would need ``generate_vmap_rule``: 0.76 ms against 2.9 ms for 32 rows of
a small layer norm); where vmap cannot run the forward, one ``apply`` a row. The single
calls (the forward at x, and every call with ``batched=False``) run ``apply`` itself.
``batched="broadcast"`` declares a forward that takes a leading batch axis by itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from gradcheck.declare import Derivation
from gradcheck.guard import case_inputs
from gradcheck.numeric import BATCHED_ARGUMENT

BATCHING = (None, False, True, "vmap", "broadcast")  # None: vmap where it runs


class BackwardContractError(RuntimeError):
    """A backward broke the contract of ``torch.autograd.Function.backward``."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_function(fn: Any) -> bool:
    return isinstance(fn, type) and issubclass(fn, torch.autograd.Function)


def _overrides(fn: type, name: str) -> bool:
    return getattr(fn, name) is not getattr(torch.autograd.Function, name)


class _ValuesCtx:
    """The ctx an old-style forward gets when only its values are wanted (batched rows):
    what it saves or marks is dropped; anything else it asks of ctx raises, and the rows
    are then evaluated one ``apply`` each."""

    def __init__(self, needs: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs

    def _drop(self, *args: Any) -> None:
        return None

    save_for_backward = save_for_forward = mark_dirty = mark_non_differentiable = _drop
    set_materialize_grads = _drop


def parameters(fn: Any) -> list[inspect.Parameter]:
    """The forward's inputs in order, without ``ctx`` (old-style Functions take it first)."""
    target = fn.forward if is_function(fn) else fn
    params = list(inspect.signature(target).parameters.values())
    return params[1:] if is_function(fn) and not _overrides(fn, "setup_context") else params


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class TorchAdapter:
    """Runs one function as torch code for the engine: a numpy forward and one vjp per input."""

    def __init__(self, fn: Any, names: list[str], wrt: list[str], device: torch.device,
                 batching: str | None) -> None:
        self.fn, self.names, self.wrt, self.device = fn, names, wrt, device
        self.batching = batching
        self.call: Callable[..., Any] = _checked(fn, self).apply if is_function(fn) else fn
        self.values = self.call if not is_function(fn) else fn.forward \
            if _overrides(fn, "setup_context") else self._old_style_values
        self.inputs: list[Any] = []  # the arguments of the call whose backward runs

    def tensors(self, case: Mapping[str, Any], grad: bool) -> list[Any]:
        args = []
        for n in self.names:
            v = case[n]
            if isinstance(v, np.ndarray):
                t = torch.from_numpy(v if v.flags.writeable else v.copy()).to(self.device)
                if grad and n in self.wrt:
                    t.requires_grad_(True)
                v = t
            args.append(v)
        return args

    def _old_style_values(self, *args: Any) -> Any:
        return self.fn.forward(_ValuesCtx(tuple(n in self.wrt for n in self.names)), *args)

    def forward(self, **case: Any) -> np.ndarray:
        """A single call runs ``apply``; a batch of perturbed rows runs the forward's own
        code (no autograd bookkeeping: 3.5 us against 62 us an apply for a small linear
        layer) through torch.vmap, or one ``apply`` per row where vmap cannot run it."""
        batched = BATCHED_ARGUMENT.get()
        args = self.tensors(case, grad=False)
        with torch.no_grad():
            if batched is None:
                return host(self.call(*args), None)
            rows = case[batched].shape[0]
            at = self.names.index(batched)
            if self.batching == "broadcast":
                return host(self.values(*args), rows)
            if self.batching in ("vmap", "auto"):
                dims = tuple(0 if i == at else None for i in range(len(args)))
                try:
                    return host(torch.vmap(self.values, in_dims=dims)(*args), rows)
                except Exception:
                    if self.batching == "vmap":
                        raise
                    self.batching = "rows"  # vmap cannot run this forward: one call each
            outs = [self.call(*args[:at], row, *args[at + 1:]) for row in args[at]]
        return np.stack([host(o, None) for o in outs])

    def backward(self, dy: np.ndarray, **case: Any) -> tuple[np.ndarray, ...]:
        """The gradients of every checked input from one forward and one backward."""
        self.inputs = args = self.tensors(case, grad=True)
        with torch.enable_grad():
            outs = floating(self.call(*args))
        pairs = [(o, g) for o, g in zip(outs, upstream(dy, outs), strict=True) if o.requires_grad]
        if not pairs:
            raise BackwardContractError(
                f"no floating output of {_name(self.fn)} requires grad, so there is no "
                "backward to check (torch: 'element 0 of tensors does not require grad')")
        need = [a for n, a in zip(self.names, args, strict=True) if n in self.wrt]
        grads = torch.autograd.grad([o for o, _ in pairs], need, [g for _, g in pairs],
                                    allow_unused=True)
        # None: no differentiable output depends on that input, torch's zero gradient
        return tuple(np.zeros_like(case[w]) if g is None else g.detach().cpu().numpy()
                     for w, g in zip(self.wrt, grads, strict=True))

    def validate(self, ctx: Any, grads: tuple[Any, ...]) -> None:
        """What torch would reject vaguely, or accept and fix silently, named."""
        fn, n = _name(self.fn), len(self.names)
        if len(grads) < n or any(g is not None for g in grads[n:]):
            raise BackwardContractError(
                f"{fn}.backward returned {len(grads)} gradient(s); its forward takes {n} "
                f"input(s) {tuple(self.names)}: expected one per input, None for those that "
                f"need none (torch: 'returned an incorrect number of gradients (expected {n}, "
                f"got {len(grads)})')")
        for i, (name, g, arg) in enumerate(zip(self.names, grads, self.inputs, strict=False)):
            if not ctx.needs_input_grad[i] or not isinstance(arg, torch.Tensor):
                continue
            where = f"{fn}.backward's gradient {i} (input {name!r})"
            if g is None:
                raise BackwardContractError(
                    f"{where} is None, but {name!r} requires grad (ctx.needs_input_grad[{i}] "
                    "is True): torch would read None as a zero gradient")
            if not isinstance(g, torch.Tensor):
                raise BackwardContractError(f"{where} is {type(g).__name__} {g!r:.60}; "
                                            "expected a tensor or None")
            if g.dtype != arg.dtype:
                raise BackwardContractError(
                    f"{where} has dtype {g.dtype}; the input is {arg.dtype} (torch would cast "
                    "it silently, losing what a float64 check is for)")
            if g.device != arg.device:
                raise BackwardContractError(
                    f"{where} is on device {g.device}; the input is on {arg.device}")
            if g.shape != arg.shape and not _expandable(arg.shape, g.shape):
                raise BackwardContractError(
                    f"{where} has shape {list(g.shape)}; expected {list(arg.shape)} (torch: "
                    f"'got {list(g.shape)} but expected shape compatible with "
                    f"{list(arg.shape)}')")


def _expandable(shape: torch.Size, to: torch.Size) -> bool:
    """torch sums a gradient of shape ``to`` down to ``shape`` when shape broadcasts to it."""
    if len(shape) > len(to):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(to), strict=False))


def _checked(fn: Any, adapter: TorchAdapter) -> Any:
    """``fn`` with its backward called through the checks of ``adapter.validate`` and a
    comparison of grad_output and the saved tensors before and after."""

    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        before = [_bytes(g) if isinstance(g, torch.Tensor) else None for g in grad_outputs]
        held = ctx.saved_tensors  # unpacked once: torch refuses a second unpack after a write
        saved = [_bytes(t) for t in held]
        result = fn.backward(ctx, *grad_outputs)
        adapter.validate(ctx, result if isinstance(result, tuple) else (result,))
        for k, (g, b) in enumerate(zip(grad_outputs, before, strict=True)):
            if b is not None and _bytes(g) != b:
                raise BackwardContractError(
                    f"{_name(fn)}.backward wrote into grad_output[{k}] in place; autograd "
                    "may hand the same tensor to other nodes, so it must not be modified")
        for k, (t, b) in enumerate(zip(held, saved, strict=True)):
            if _bytes(t) != b:
                raise BackwardContractError(
                    f"{_name(fn)}.backward modified saved tensor {k} (ctx.saved_tensors[{k}]) "
                    "in place; a second backward through the same graph would read the "
                    "modified values")
        return result

    namespace = {"backward": staticmethod(backward), "__module__": fn.__module__,
                 "__qualname__": fn.__qualname__, "__doc__": fn.__doc__}
    return type(fn.__name__, (fn,), namespace)


def floating(out: Any) -> list[torch.Tensor]:
    """The floating tensors among a forward's outputs, in order."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]


def host(out: Any, rows: int | None) -> np.ndarray:
    """The floating outputs as one host array: the output itself when there is one, else all
    of them flattened end to end (per leading row when ``rows`` is given)."""
    outs = [o.detach().cpu().numpy() for o in floating(out)]
    if not outs:
        raise BackwardContractError("the forward returned no floating tensor")
    if isinstance(out, torch.Tensor):
        return outs[0]
    if rows is None:
        return np.concatenate([o.reshape(-1) for o in outs])
    return np.concatenate([o.reshape(rows, -1) for o in outs], axis=1)


def upstream(dy: np.ndarray, outs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The engine's upstream gradient as one tensor per floating output."""
    flat, grads, at = dy.reshape(-1), [], 0
    for o in outs:
        part = np.ascontiguousarray(flat[at : at + o.numel()]).reshape(tuple(o.shape))
        grads.append(torch.from_numpy(part).to(device=o.device, dtype=o.dtype))
        at += o.numel()
    return grads


def derivation(
    name: str,
    function: Any,
    *,
    cases: Any,
    wrt: Iterable[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batched: bool | str | None = None,
    variant: str = "reference",
    expect: str | Mapping[str, str] = "pass",
    source: str = "",
    classify: Callable[[dict[str, Any]], str] | None = None,
) -> Derivation:
    """A Derivation whose forward and formulas run ``function`` as torch code.

    ``function`` is a ``torch.autograd.Function`` subclass or a function of tensors. Its
    inputs are the case's keys; ``wrt`` names those that require grad, one formula each
    (default: the inputs without a default value). ``device`` defaults to CUDA when present,
    else the CPU; ``dtype`` to float32 on CUDA, else the run's (float64 unless asked).
    ``batched``: None evaluates batches of perturbed rows through torch.vmap over the
    forward's own code, or one ``apply`` a row where vmap cannot run it; ``"vmap"`` insists
    (a forward vmap cannot run is an error); ``"broadcast"`` (or True) declares a forward
    that takes a leading batch axis itself; False: one ``apply`` per perturbation.
    ``expect`` is one expectation for every formula or one per input name.
    """
    names, chosen = case_inputs(name, _name(function), parameters(function), wrt)
    if batched not in BATCHING:
        raise ValueError(f"{name}: batched must be one of {BATCHING}, got batched={batched!r}")
    batching = "auto" if batched is None else "broadcast" if batched is True \
        else None if batched is False else str(batched)
    dev = torch.device(device or default_device())
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: device={device!r} asked for, but torch sees no CUDA device")
    dtype = dtype or ("float32" if dev.type == "cuda" else None)
    adapter = TorchAdapter(function, names, chosen, dev, batching)
    runs_on = f"torch {torch.__version__} on {dev}" + (f", {dtype}" if dtype else "")
    d = Derivation(name, adapter.forward, cases, source=source or _name(function),
                   batched=batching is not None, classify=classify, dtype=dtype,
                   runs_on=runs_on)
    what = f"{_name(function)}.backward" if is_function(function) \
        else f"autograd through {_name(function)}"
    d.backward(tuple(chosen), adapter.backward, variant=variant, expect=expect,
               text=f"{what}, gradients of {', '.join(chosen)} from one call")
    return d
