"""One case, one verdict: ``check_vjp`` and ``assert_vjp``.

Exhaustive mode compares every element; extra evaluations (a second step for the
truncation estimate, a smaller step, the kink test) are spent only on the elements whose
first comparison is not already inside the noise-only tolerance, so a passing check costs
about 2n evaluations. Directional mode compares a few random directional derivatives
and, when one disagrees, localises the culprits by bisection down to exhaustive blocks.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck import compare
from gradcheck.errors import GradientMismatch, InvalidCase
from gradcheck.numeric import DEFAULT_BUDGET, Loss, eps_of, estimate_noise
from gradcheck.result import CaseResult, Element
from gradcheck.verdict import Verdicts, along_direction, compare_elements

MODES = ("auto", "exhaustive", "directional")
MAX_EXHAUSTIVE = 1 << 16  # auto mode: larger inputs are checked along random directions
DIRECTIONS = 4
LEAF = 64  # localisation stops bisecting at blocks this small and checks them element-wise
REPORTED = 5  # worst elements listed in an explanation


class _Broken(Exception):
    """The forward or the formula misbehaved: the case's status is 'error'."""


def _describe(out: Any) -> str:
    if isinstance(out, np.ndarray):
        return f"an array of shape {out.shape} and dtype {out.dtype}"
    return f"{type(out).__name__} {out!r:.80}"


def _as_float_array(out: Any, who: str, shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(out, (np.ndarray, np.generic, float)) or isinstance(out, bool):
        raise _Broken(f"{who} returned {_describe(out)}; expected a numpy float array")
    arr = np.asarray(out)
    if not np.issubdtype(arr.dtype, np.floating):
        raise _Broken(f"{who} returned {_describe(arr)}; expected a floating dtype")
    if shape is not None and arr.shape != shape:
        hint = " (transposed?)" if arr.shape == shape[::-1] and arr.ndim > 1 else ""
        raise _Broken(f"{who} returned shape {arr.shape}; expected {shape}{hint}")
    if not np.all(np.isfinite(arr)):
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
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise InvalidCase(
            f"case[{wrt!r}] must be a numpy float array, got {_describe(x)}"
        )
    if x.size == 0:
        raise InvalidCase(f"case[{wrt!r}] is empty (shape {x.shape}); nothing to check")
    if not np.all(np.isfinite(x)):
        raise InvalidCase(f"case[{wrt!r}] has non-finite values; expected finite floats")
    prepared, notes = dict(case), []
    for k, v in case.items():
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and v.dtype != target:
            notes.append(f"{k} cast from {v.dtype} to {target}")
            prepared[k] = v.astype(target)
        elif isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
            prepared[k] = v.copy()
    return prepared, target, notes


def _float_arrays(case: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: v for k, v in case.items()
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)
    }


def _unchanged(case: dict[str, Any], snapshot: dict[str, np.ndarray], who: str) -> None:
    for k, before in snapshot.items():
        if not np.array_equal(case[k], before, equal_nan=True):
            raise _Broken(f"{who} modified its input {k!r} in place; it must not mutate arguments")


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
    result.mode = mode
    fwd, back = _guard(forward, "forward"), _guard(vjp, "vjp")
    rng = np.random.default_rng(seed)
    try:
        snapshot = {k: v.copy() for k, v in arrays.items()}
        y = _as_float_array(fwd(**case), "forward", None)
        _unchanged(case, snapshot, "forward")
        if upstream is None:
            g = rng.standard_normal(y.shape).astype(target)
        else:
            g = np.asarray(upstream, dtype=target)
            if g.shape != y.shape:
                raise InvalidCase(f"upstream has shape {g.shape}; forward returns {y.shape}")
        a = _as_float_array(back(g, **case), "vjp", x.shape).astype(np.float64)
        _unchanged(case, snapshot, "vjp")
        loss = Loss(
            fwd, case, wrt, g, batched=batched, budget=budget,
            check_output=lambda out, shape: _as_float_array(out, "forward", shape),
        )
        L0, again = loss.rows(np.stack([x, x]))
        magnitude = float(np.sum(np.abs(g * y)) + np.sum(np.abs(g)) * max(
            float(np.max(np.abs(v), initial=0.0)) for v in arrays.values()
        ))
        if abs(L0 - again) > compare.SAFETY * eps_of(target) * magnitude:
            raise _Broken(
                f"forward is nondeterministic: two evaluations at the same input gave "
                f"{L0!r} and {again!r}"
            )
        noise = estimate_noise(loss, L0, magnitude, rng)
        result.noise = noise.sigma
        if noise.how == "upper bound":
            notes.append("noise of L not resolved; its highest-order difference bounds it")
        if mode == "exhaustive":
            _exhaustive(result, loss, L0, a, noise.sigma)
        else:
            _directional(result, loss, L0, a, noise.sigma, rng, directions)
        _unchanged(case, snapshot, "forward")
        result.evaluations = loss.evaluations
        result.analytic = a
    except _Broken as exc:
        result.status, result.message = "error", str(exc)
    return result


def _fill(result: CaseResult, a: np.ndarray, v: Verdicts, shape: tuple[int, ...]) -> None:
    bad = ~v.ok & ~v.kink
    rel = compare.rel_error(a, v.numeric, v.atol, result.rtol)
    result.numeric = v.numeric.reshape(shape)
    result.rel_error = rel.reshape(shape)
    result.failed, result.kinked = bad.reshape(shape), v.kink.reshape(shape)
    result.checked, result.mismatches = a.size, int(bad.sum())
    result.nonsmooth = int(v.kink.sum())
    result.max_rel_error = float(rel.max(initial=0.0))
    result.max_abs_error = float(np.abs(a - v.numeric).max(initial=0.0))
    worst = int(np.argmax(rel))
    result.worst_index = tuple(int(i) for i in np.unravel_index(worst, shape))
    order = np.argsort(-(rel + 2.0 * bad + 1.0 * v.kink))[:REPORTED]
    result.worst = [
        Element(
            tuple(int(i) for i in np.unravel_index(j, shape)), float(a[j]), float(v.numeric[j]),
            float(abs(a[j] - v.numeric[j])), float(rel[j]), "fail" if bad[j] else "nonsmooth",
        )
        for j in order if bad[j] or v.kink[j]
    ]
    if bad.any():
        result.status = "fail"
        result.diagnosis = compare.diagnose(
            a.reshape(shape), result.numeric, v.atol.reshape(shape), result.rtol, bad.reshape(shape)
        )
    elif v.kink.any():
        result.status = "nonsmooth"
        result.diagnosis = (
            f"{result.nonsmooth} element(s) sit at a kink: the one-sided differences disagree "
            "and the analytic value lies between them"
        )
    else:
        result.status = "pass"


def _exhaustive(result: CaseResult, loss: Loss, L0: float, a: np.ndarray, sigma: float) -> None:
    af = a.reshape(-1)
    v = compare_elements(loss, L0, af, np.arange(af.size), sigma, result.rtol)
    _fill(result, af, v, a.shape)


def _directional(
    result: CaseResult,
    loss: Loss,
    L0: float,
    a: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    k: int,
) -> None:
    x, rtol = loss.x, result.rtol
    scale = np.maximum(1.0, np.abs(x.astype(np.float64)))
    t = eps_of(x.dtype) ** (1 / 3) * float(np.sqrt(np.mean(scale**2)))
    rows, vs = [], []
    for _ in range(k):
        v = rng.standard_normal(x.shape) * scale
        v /= np.linalg.norm(v)
        vs.append(v)
        rows.append(along_direction(loss, L0, v, t, a, sigma, rtol))
    ana = np.array([r.analytic for r in rows])
    num = np.array([r.numeric for r in rows])
    tol = np.array([r.atol for r in rows])
    ok = np.array([r.ok for r in rows])
    kink = np.array([r.kink for r in rows])
    rel = compare.rel_error(ana, num, tol, rtol)
    bad = ~ok & ~kink
    result.checked, result.mismatches, result.nonsmooth = k, int(bad.sum()), int(kink.sum())
    result.max_rel_error = float(rel.max())
    result.max_abs_error = float(np.abs(ana - num).max())
    result.worst = [
        Element(None, float(ana[i]), float(num[i]), float(abs(ana[i] - num[i])), float(rel[i]),
                "fail" if bad[i] else "nonsmooth")
        for i in np.argsort(-rel) if bad[i] or kink[i]
    ]
    if bad.any():
        result.status = "fail"
        worst_direction = vs[int(np.argmax(np.where(bad, rel, -1.0)))]
        found = _localise(loss, L0, a, sigma, rtol, worst_direction, t)
        result.worst = found + result.worst
        if found:
            result.worst_index = max(found, key=lambda e: e.rel_error).index
            result.max_rel_error = max(result.max_rel_error, *(e.rel_error for e in found))
        overall = compare.diagnose(ana, num, tol, rtol, bad)
        if not overall.startswith(("sign", "constant")):
            overall = f"{int(bad.sum())} of {k} random directions disagree"
        where = ", ".join(str(e.index) for e in found) or "not localised"
        result.diagnosis = f"{overall}; localised to elements {where}"
    elif kink.any():
        result.status = "nonsmooth"
        result.diagnosis = f"{int(kink.sum())} direction(s) cross a kink"
    else:
        result.status = "pass"


def _localise(
    loss: Loss, L0: float, a: np.ndarray, sigma: float, rtol: float, v: np.ndarray, t: float
) -> list[Element]:
    """Split a disagreeing direction v into halves (same components, same step) and follow
    the halves that still disagree (or the worse one) down to blocks checked element-wise."""
    x, af, vf = loss.x, a.reshape(-1), v.reshape(-1)
    found: list[Element] = []
    stack = [(0, af.size)]
    while stack and len(found) < REPORTED:
        lo, hi = stack.pop()
        if hi - lo <= LEAF:
            index = np.arange(lo, hi)
            leaf = compare_elements(loss, L0, af[index], index, sigma, rtol)
            rel = compare.rel_error(af[index], leaf.numeric, leaf.atol, rtol)
            for j in np.flatnonzero(~leaf.ok & ~leaf.kink)[: REPORTED - len(found)]:
                i, n = int(index[j]), float(leaf.numeric[j])
                found.append(Element(
                    tuple(int(q) for q in np.unravel_index(i, x.shape)), float(af[i]),
                    n, float(abs(af[i] - n)), float(rel[j]), "fail",
                ))
            continue
        mid = (lo + hi) // 2
        halves, excess = [], []
        for b0, b1 in ((mid, hi), (lo, mid)):
            part = np.zeros_like(vf)
            part[b0:b1] = vf[b0:b1]
            r = along_direction(loss, L0, part.reshape(x.shape), t, a, sigma, rtol)
            halves.append(((b0, b1), not r.ok and not r.kink))
            excess.append(abs(r.analytic - r.numeric) / (r.atol + rtol * abs(r.numeric)))
        failing = [block for block, bad in halves if bad]
        stack.extend(failing or [halves[int(np.argmax(excess))][0]])
    return found


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
