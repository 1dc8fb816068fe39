"""One case, one verdict: ``check_vjp`` and ``assert_vjp``.

Exhaustive mode compares every element; extra evaluations (a second step for the
truncation estimate, a smaller step, the kink test) are spent only on the elements whose
first comparison is not already inside the noise-only tolerance, so a passing check costs
2n + 2 evaluations (the noise of L is measured only when the verdict at its floor is not a
pass). Directional mode compares a few random directional derivatives
and, when one disagrees, localises the culprits by bisection down to exhaustive blocks.

The case's arrays are used as given, not copied (only a non-contiguous array, or one of
another dtype, is converted); the engine never writes to them. A forward or vjp that
modifies an argument (or the upstream gradient) in place is caught by comparing CRC-32
checksums of the arrays' bytes before and after, which costs no memory (and half the time
of a SHA-1 digest: an accidental change, not an adversary, is what is looked for).
"""

from __future__ import annotations

import dataclasses
import functools
import traceback
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck import compare
from gradcheck.errors import GradientMismatch, InvalidCase
from gradcheck.numeric import DEFAULT_BUDGET, Loss, eps_of, estimate_noise, loss_rows, max_abs
from gradcheck.result import CaseResult, Element
from gradcheck.verdict import REPORTED, Verdicts, compare_elements, directional

MODES = ("auto", "exhaustive", "directional")
MAX_EXHAUSTIVE = 1 << 16  # auto mode: larger inputs are checked along random directions
WORK_BYTES = 12 * 8  # per element, exhaustive mode holds about 12 float64 work arrays
DIRECTIONS = 2  # a zeroed element among 70,000: 1 direction missed it for 1 seed in 40, 2 for none


class _Broken(Exception):
    """The forward or the formula misbehaved: the case's status is 'error'."""


def _describe(out: Any) -> str:
    if isinstance(out, np.ndarray):
        return f"an array of shape {out.shape} and dtype {out.dtype}"
    return f"{type(out).__name__} {out!r:.80}"


def _is_float(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind == "f"


def _as_float_array(out: Any, who: str, shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(out, (np.ndarray, np.generic, float)) or isinstance(out, bool):
        raise _Broken(f"{who} returned {_describe(out)}; expected a numpy float array")
    arr = np.asarray(out)
    if arr.dtype.kind != "f":
        raise _Broken(f"{who} returned {_describe(arr)}; expected a floating dtype")
    if shape is not None and arr.shape != shape:
        hint = " (transposed?)" if arr.shape == shape[::-1] and arr.ndim > 1 else ""
        raise _Broken(f"{who} returned shape {arr.shape}; expected {shape}{hint}")
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0]) if arr.ndim else ()
        raise _Broken(f"{who} returned a non-finite value {arr[bad]!r} at index {bad}")
    return arr


def _guard(fn: Callable[..., Any], who: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _Broken:
            raise
        except Exception as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            raise _Broken(f"{who} raised {type(exc).__name__}: {exc}\n{''.join(tb[-3:])}") from exc

    return call


def _prepare(
    case: Any, wrt: Any, mode: str, dtype: Any
) -> tuple[dict[str, Any], np.dtype, list[str]]:
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
    if not _is_float(x):
        raise InvalidCase(
            f"case[{wrt!r}] must be a numpy float array, got {_describe(x)}"
        )
    if x.size == 0:
        raise InvalidCase(f"case[{wrt!r}] is empty (shape {x.shape}); nothing to check")
    if not np.isfinite(x).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise InvalidCase(f"case[{wrt!r}] has a non-finite value {x[where]!r} at index "
                          f"{where}; expected finite floats")
    prepared, notes = dict(case), []
    for k, v in case.items():
        if _is_float(v) and v.dtype != target:
            notes.append(f"{k} cast from {v.dtype} to {target}")
            prepared[k] = v.astype(target)
        elif _is_float(v):
            prepared[k] = np.ascontiguousarray(v)  # used as given: the engine never writes to it
    return prepared, target, notes


def _float_arrays(case: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in case.items() if _is_float(v)}


@functools.lru_cache(maxsize=64)
def _seed_sequence(seed: int) -> np.random.SeedSequence:
    """Seeding costs more than a small check's arithmetic; the sequence is reusable."""
    return np.random.SeedSequence(seed)


def _digests(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """A CRC-32 of each (C-contiguous) array's bytes: mutation is checked without a copy."""
    return {k: zlib.crc32(v.reshape(-1).view(np.uint8).data) for k, v in arrays.items()}


def _unchanged(
    arrays: Mapping[str, np.ndarray], before: dict[str, int], who: str, what: str = "input"
) -> None:
    for k, digest in _digests(arrays).items():
        if digest != before[k]:
            raise _Broken(f"{who} modified its {what} {k!r} in place; it must not mutate arguments")


def _mutator(forward: Callable[..., Any], case: Mapping[str, Any],
             arrays: Mapping[str, np.ndarray]) -> str:
    """Which of forward and vjp modified an input: the forward is tried on copies (only
    on this error path, so a passing check digests its inputs once less)."""
    copies = {k: v.copy() for k, v in arrays.items()}
    digests = _digests(copies)
    forward(**{**case, **copies})
    return "forward" if _digests(copies) != digests else "vjp"


def check_vjp(
    forward: Callable[..., Any],
    vjp: Callable[..., Any],
    case: Mapping[str, Any],
    wrt: str,
    *,
    seed: int = 0,
    mode: str = "auto",
    dtype: Any = None,
    batched: bool = False,
    upstream: np.ndarray | None = None,
    budget: int = DEFAULT_BUDGET,
    directions: int = DIRECTIONS,
    max_exhaustive: int = MAX_EXHAUSTIVE,
) -> CaseResult:
    """Compare ``vjp(g, **case)`` with central differences of <g, forward(**case)> in case[wrt].

    ``g`` is ``upstream`` or drawn from N(0, 1) with ``numpy.random.default_rng(seed)``.
    Raises ``InvalidCase`` for unusable arguments; a misbehaving forward or vjp gives a
    result with status ``"error"`` and a message instead.
    """
    case, target, notes = _prepare(case, wrt, mode, dtype)
    arrays = _float_arrays(case)
    result = CaseResult(
        status="error", wrt=wrt, dtype=str(target), seed=int(seed), notes=notes,
        shapes={k: tuple(v.shape) for k, v in arrays.items()},
        params={k: v for k, v in case.items() if k not in arrays},
        rtol=compare.rtol_of(target),
    )
    x = case[wrt]
    if mode == "auto":
        mode = "exhaustive" if x.size <= max_exhaustive else "directional"
        if mode == "directional":
            notes.append(f"{x.size} elements > {max_exhaustive}: checked along random directions")
    elif mode == "exhaustive" and x.size * WORK_BYTES > budget:
        mode = "directional"
        notes.append(f"exhaustive mode would hold {x.size * WORK_BYTES / 2**20:.0f} MiB of "
                     f"work arrays for {x.size} elements, over the {budget / 2**20:.0f} MiB "
                     "budget: checked along random directions instead")
    result.mode = mode
    fwd, back = _guard(forward, "forward"), _guard(vjp, "vjp")
    rng = np.random.Generator(np.random.PCG64(_seed_sequence(seed)))  # = default_rng(seed)
    try:
        before = _digests(arrays)
        y = _as_float_array(fwd(**case), "forward", None)
        if upstream is None:
            g = rng.standard_normal(y.shape).astype(target)
        else:
            g = np.ascontiguousarray(upstream, dtype=target)
            if g.shape != y.shape:
                raise InvalidCase(f"upstream has shape {g.shape}; forward returns {y.shape}")
        g_before = _digests({"dy": g})
        a = np.asarray(_as_float_array(back(g, **case), "vjp", x.shape), dtype=np.float64)
        if any(np.may_share_memory(a, v) for v in (g, *arrays.values())):
            a = a.copy()  # the vjp returned (a view of) an argument: keep the result its own
        if _digests(arrays) != before:  # the forward or the vjp wrote to an input: which?
            _unchanged(arrays, before, _mutator(fwd, case, arrays))
        _unchanged({"dy": g}, g_before, "vjp", "upstream gradient")
        loss = Loss(
            fwd, case, wrt, g, batched=batched, budget=budget,
            check_output=lambda out, shape: _as_float_array(
                out, "forward on a batch of inputs (batched=True)" if batched else "forward", shape
            ),
            reserve=2 * 8 * x.size,  # the analytic gradient and one direction, held beside
        )
        magnitude = float(np.sum(np.abs(g * y)) + np.sum(np.abs(g)) * max(
            max_abs(v) for v in arrays.values()
        ))
        L0 = float(loss_rows(y[None], g)[0])
        # L at x again, through the batched path: randomness drawn once per call shows
        _same(L0, loss.at_x(), magnitude, target, "two evaluations at the same input")
        # Judge at the noise floor first: the measured noise is never below it, and a larger
        # noise only widens tolerances, so a pass there stands. Anything else is judged
        # again at the measured noise, when that is larger.
        floor = eps_of(target) * magnitude
        directions_from = rng.bit_generator.state
        verdict = _judge(result, mode, loss, L0, a, floor, rng, directions)
        if verdict.status != "pass":
            L_table, noise = estimate_noise(loss, magnitude, rng)
            _same(L0, L_table, magnitude, target,
                  "a call of its own and a row of a batched call, at the same input")
            if noise.sigma > floor:
                rng.bit_generator.state = directions_from  # the same random directions
                verdict = _judge(result, mode, loss, L0, a, noise.sigma, rng, directions)
            if noise.how == "upper bound":
                verdict.notes.append(
                    "noise of L not resolved; its highest-order difference bounds it")
        result = verdict
        _unchanged(arrays, before, "forward")
        result.evaluations = 1 + loss.evaluations  # the forward at x, then L's
        result.analytic = a
    except _Broken as exc:
        result.status, result.message = "error", str(exc)
    return result


def _fill(result: CaseResult, a: np.ndarray, v: Verdicts, shape: tuple[int, ...]) -> None:
    bad = ~v.ok & ~v.kink
    rel = compare.rel_error(a, v.numeric, v.atol, result.rtol, v.ok)
    result.numeric = v.numeric.reshape(shape)
    result.rel_error = rel.reshape(shape)
    result.failed, result.kinked = bad.reshape(shape), v.kink.reshape(shape)
    result.checked, result.mismatches = a.size, int(bad.sum())
    result.nonsmooth = int(v.kink.sum())
    result.max_rel_error = float(rel.max(initial=0.0))
    result.max_abs_error = float(np.abs(a - v.numeric).max(initial=0.0))
    worst = int(np.argmax(rel))
    result.worst_index = tuple(int(i) for i in np.unravel_index(worst, shape))
    if result.mismatches or result.nonsmooth:  # the elements listed: failures, then kinks
        order = np.argsort(-(rel + 2.0 * bad + 1.0 * v.kink))[:REPORTED]
        result.worst = [
            Element(
                tuple(int(i) for i in np.unravel_index(j, shape)), float(a[j]),
                float(v.numeric[j]), float(abs(a[j] - v.numeric[j])), float(rel[j]),
                "fail" if bad[j] else "nonsmooth",
            )
            for j in order if bad[j] or v.kink[j]
        ]
    if result.mismatches:
        result.status = "fail"
        result.diagnosis = compare.diagnose(
            a.reshape(shape), result.numeric, v.atol.reshape(shape), result.rtol, bad.reshape(shape)
        )
    elif result.nonsmooth:
        result.status = "nonsmooth"
        blurred, kinks = int(v.unresolved.sum()), result.nonsmooth - int(v.unresolved.sum())
        parts = [f"{kinks} element(s) sit at a kink: the one-sided differences disagree and "
                 "the analytic value lies between them"] if kinks else []
        if blurred:
            parts.append(f"{blurred} element(s) are not resolved by finite differences: the "
                         "function changes faster than steps down to h/8 can follow")
        result.diagnosis = "; ".join(parts)
    else:
        result.status = "pass"


def _same(L1: float, L2: float, magnitude: float, dtype: np.dtype, how: str) -> None:
    if abs(L1 - L2) > compare.SAFETY * eps_of(dtype) * magnitude:
        raise _Broken(f"forward is nondeterministic: {how} gave {L1!r} and {L2!r}")


def _judge(
    template: CaseResult, mode: str, loss: Loss, L0: float, a: np.ndarray, sigma: float,
    rng: np.random.Generator, directions: int,
) -> CaseResult:
    """A fresh result: the verdict of ``mode`` at noise level sigma."""
    result = dataclasses.replace(template, notes=list(template.notes), noise=sigma)
    if mode == "exhaustive":
        af = a.reshape(-1)
        v = compare_elements(loss, L0, af, np.arange(af.size), sigma, result.rtol)
        _fill(result, af, v, a.shape)
    else:
        directional(result, loss, L0, a, sigma, rng, directions)
    return result


def assert_vjp(
    forward: Callable[..., Any],
    vjp: Callable[..., Any],
    case: Mapping[str, Any],
    wrt: str,
    **options: Any,
) -> CaseResult:
    """``check_vjp``, raising ``GradientMismatch`` (an AssertionError) unless it passes."""
    result = check_vjp(forward, vjp, case, wrt, **options)
    if not result.ok:
        raise GradientMismatch(result.explain(), result)
    return result
