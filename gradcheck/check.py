"""One case, one verdict: ``check_vjp`` and ``assert_vjp``.

Exhaustive mode compares every element; extra evaluations (a second step for the
truncation estimate, a smaller step, the kink test) are spent only on the elements whose
first comparison is not already inside the noise-only tolerance, so a passing check costs
2n + 2 evaluations (the noise of L is measured only when the verdict at its floor is not a
pass, or rests on a smaller step). Directional mode compares a few random directional
derivatives and, when one disagrees, localises the culprits by bisection down to exhaustive
blocks. What a case may hold, and how the user's callables are guarded, is
``gradcheck.guard``'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck import compare, structured
from gradcheck.errors import GradientMismatch, InvalidCase
from gradcheck.guard import (  # noqa: F401 (MODES: part of check's interface)
    MODES,
    Broken,
    as_float_array,
    check_options,
    digests,
    float_arrays,
    guard,
    prepare,
    unchanged,
)
from gradcheck.noise import estimate_noise, magnitudes, term_floor
from gradcheck.numeric import (
    DEFAULT_BUDGET,
    ELEMENTS,
    Loss,
    call_batched,
    eps_of,
    loss_rows,
    max_abs,
    slices,
)
from gradcheck.result import CaseResult, Element
from gradcheck.structure import DeclarationError, Pattern, Structure, bind, resolve
from gradcheck.verdict import REPORTED, Verdicts, compare_elements, directional

OVERFLOW = 2.0**1000  # |L| or its magnitudes beyond this: differences of L could overflow
MAX_EXHAUSTIVE = 1 << 16  # auto mode: larger inputs are checked along random directions
WORK_BYTES = 12 * 8  # per element, exhaustive mode holds about 12 float64 work arrays
STRUCTURED_BYTES = 15 * 8  # per element in structured mode: 12 work arrays, 3 of the colouring
OUTPUT_BYTES = 6 * 8  # per output, structured mode holds about 6 float64 arrays
DIRECTIONS = 2  # see benchmarks/README.md: a third or fourth caught no seed the second missed


@functools.lru_cache(maxsize=64)
def _seed_sequence(seed: int) -> np.random.SeedSequence:
    """Seeding costs more than a small check's arithmetic; the sequence is reusable."""
    return np.random.SeedSequence(seed)


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
    structure: Any = None,
) -> CaseResult:
    """Compare ``vjp(g, **case)`` with central differences of <g, forward(**case)> in case[wrt].

    ``g`` is ``upstream`` or drawn from N(0, 1) with ``numpy.random.default_rng(seed)``.
    Raises ``InvalidCase`` for unusable arguments; a misbehaving forward or vjp gives a
    result with status ``"error"`` and a message instead. ``structure`` (a
    ``gradcheck.structure`` declaration, or a function of the case returning one) enables
    the structured exhaustive mode (``gradcheck.structured``): in auto
    or exhaustive mode it is used when it needs fewer colours than elements and fits the
    budget; a declaration found wrong is noted and the check redone without it.
    """
    check_options(seed, directions, budget, max_exhaustive)
    case, target, notes = prepare(case, wrt, mode, dtype)
    arrays = float_arrays(case)
    result = CaseResult(
        status="error", wrt=wrt, dtype=target.name, seed=int(seed), notes=notes,
        shapes={k: tuple(v.shape) for k, v in arrays.items()},
        params={k: v for k, v in case.items() if k not in arrays},
        rtol=compare.rtol_of(target),
    )
    x = case[wrt]
    requested = mode
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
    fwd, back = guard(forward, "forward"), guard(vjp, "vjp")
    rng = np.random.Generator(np.random.PCG64(_seed_sequence(seed)))  # = default_rng(seed)
    g = None
    try:
        before = digests(arrays)
        y = as_float_array(fwd(**case), "forward", None)
        unchanged(arrays, before, "forward")
        if upstream is None:
            g = rng.standard_normal(y.shape).astype(target)
        else:
            g = np.array(upstream, dtype=target, order="C")  # 0-d stays 0-d
            if g.shape != y.shape:
                raise InvalidCase(f"upstream has shape {g.shape}; forward returns {y.shape}")
        g_before = digests({"dy": g})
        pattern = _pattern(structure, case, x, y, requested, budget, max_exhaustive, notes)
        plain, dropped = mode, [n for n in notes if "checked along random directions" in n]
        if pattern is not None:
            mode = result.mode = "structured"
            notes[:] = [n for n in notes if n not in dropped]
        inputs_max = max(max_abs(v) for v in arrays.values())
        floor = noise_floor(g, y, inputs_max, eps_of(target))
        spread, y_floor = spread_floor(g, y, inputs_max, eps_of(target))
        L0 = float(loss_rows(y[None], g)[0])
        if pattern is None:
            y = np.empty(0)  # not needed again: freed before the vjp and the differences run
        a = np.asarray(as_float_array(back(g, **case), "vjp", x.shape), dtype=np.float64)
        if any(np.may_share_memory(a, v) for v in (g, *arrays.values())):
            a = a.copy()  # the vjp returned (a view of) an argument: keep the result its own
        unchanged(arrays, before, "vjp")
        unchanged({"dy": g}, g_before, "vjp", "upstream gradient")
        loss = Loss(
            fwd, case, wrt, g, batched=batched, budget=budget,
            check_output=lambda out, shape: as_float_array(
                out, "forward on a batch of inputs (batched=True)" if batched else "forward",
                shape, finite=False,
            ),
            reserve=2 * 8 * x.size,  # the analytic gradient and one direction, held beside
        )
        if not (math.isfinite(L0) and floor < OVERFLOW * eps_of(target)):
            return _overflow(result, loss, L0, floor / eps_of(target), a)
        # L at x again, through the batched path: randomness drawn once per call shows
        terms = functools.cache(lambda: term_floor(fwd, case, g, eps_of(target)))
        _same(L0, loss.at_x(), floor, "two evaluations at the same input", terms)
        if not np.any(g):
            result = _no_evidence(result, loss, a)
            result.upstream = g
            return result
        verdict: CaseResult | str | None = None
        if pattern is not None:
            verdict = structured.structured_verdict(
                result, loss, L0, y, a, pattern, inputs_max, floor, rng, _fill)
            if isinstance(verdict, str):  # the declaration was found wrong
                notes.extend([f"{verdict}; checked without it", *dropped])
                mode = result.mode = plain
        if isinstance(verdict, CaseResult):
            result = verdict
        else:
            result = _plain(result, mode, loss, L0, a, spread, y_floor, rng, directions, terms,
                            same_floor=floor)
        unchanged(arrays, before, "forward")
        result.evaluations = 1 + loss.evaluations  # the forward at x, then L's
        result.analytic = a
    except Broken as exc:
        result.status, result.message = "error", str(exc)
    if batched and result.status != "pass":  # a wrong batched=True shows as anything else
        wrong = batch_claim_broken(fwd, case, wrt)
        if wrong:
            result.status, result.message, result.diagnosis = "error", wrong, ""
    result.upstream = g
    return result


def noise_floor(g: np.ndarray, y: np.ndarray, top: float, eps: float) -> float:
    """eps * (sum|g*y| + |g|_1 max|inputs|): the rounding of the magnitudes that flow
    through L, each product taken with eps first so that none overflows (inf only when the
    sum itself exceeds the float64 range); slice by slice. ``top`` is max|inputs|."""
    gy, g1 = _sliced(g, y, eps)
    with np.errstate(over="ignore"):
        return float(gy + g1 * top)


def spread_floor(g: np.ndarray, y: np.ndarray, top: float, eps: float) -> tuple[float, float]:
    """(eps * (|g*y|_2 + |g|_2 top), eps * |g*y|_2): ``noise_floor`` and its output term
    with the per-output roundings added as independent roundings add,
    as sqrt(n), not as n (the linear sums let a flipped float32 sine pass at 10^4
    elements). The element and direction verdicts use these."""
    gy = _norm(g, y, eps)
    with np.errstate(over="ignore"):
        return float(gy + _norm(g, None, eps) * top), gy


def _norm(g: np.ndarray, y: np.ndarray | None, eps: float) -> float:
    """|eps g y|_2 (|eps g|_2 for y None), scaled by its largest term: no square overflows;
    slice by slice."""
    gf = g.reshape(-1)
    yf = None if y is None else y.reshape(-1)

    def terms(i: int) -> np.ndarray:
        t = eps * np.abs(gf[i : i + ELEMENTS].astype(np.float64))
        return t if yf is None else t * np.abs(yf[i : i + ELEMENTS].astype(np.float64))

    with np.errstate(over="ignore", invalid="ignore"):
        top = max((float(np.max(terms(i), initial=0.0)) for i in slices(gf.size)), default=0.0)
        if not 0 < top < np.inf:
            return top
        total = sum(float(np.sum((terms(i) / top) ** 2)) for i in slices(gf.size))
        return top * float(np.sqrt(total))


def _no_evidence(result: CaseResult, loss: Loss, a: np.ndarray) -> CaseResult:
    """The upstream gradient is zero: L = <g, y> is 0 at every input, so its differences
    say nothing about the formula. Not resolved, and said why; never a verdict."""
    result.status, result.nonsmooth = "nonsmooth", a.size
    result.checked, result.analytic, result.evaluations = a.size, a, 1 + loss.evaluations
    result.diagnosis = ("not resolved: the upstream gradient is zero everywhere, so "
                        "L = <g, y> does not depend on x and its differences give no "
                        "evidence on the formula; use a nonzero upstream")
    return result


def _sliced(g: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, float]:
    """(sum|g| (eps |y|), sum |g| eps), over slices of ELEMENTS."""
    gf, yf = g.reshape(-1), y.reshape(-1)
    gy, g1 = [], []
    with np.errstate(over="ignore"):
        for i in slices(gf.size):
            gs = np.abs(gf[i : i + ELEMENTS].astype(np.float64))
            gy.append(np.sum(gs * (eps * np.abs(yf[i : i + ELEMENTS].astype(np.float64)))))
            g1.append(np.sum(gs * eps))
        return float(np.sum(gy)), float(np.sum(g1))


def _overflow(
    result: CaseResult, loss: Loss, L0: float, magnitude: float, a: np.ndarray
) -> CaseResult:
    """L = <g, y> (or the magnitudes in it) comes within OVERFLOW of the float64 range:
    its differences would overflow. Not resolved, and said why; never a verdict."""
    result.status, result.nonsmooth = "nonsmooth", a.size
    result.checked, result.analytic, result.evaluations = a.size, a, 1 + loss.evaluations
    result.diagnosis = (f"not resolved: L = <g, y> = {L0:.3g} with magnitudes up to "
                        f"{magnitude:.3g} comes too close to the float64 range "
                        f"({OVERFLOW:.3g}) for its differences to be taken")
    return result


def batch_claim_broken(forward: Callable[..., Any], case: dict[str, Any], wrt: str) -> str:
    """Why ``forward`` does not broadcast over a leading batch axis of ``case[wrt]``, or "".

    Two rows, x and a changed x, are evaluated in one call and each alone; a forward that
    broadcasts gives each row what the single call gives (to rounding). A forward whose
    single calls already differ is nondeterministic, which is not this question.
    """
    x = case[wrt]
    rows = np.stack([x, x * 0.5 + 0.25])
    claim = "forward does not broadcast over a leading batch axis (declared batched=True)"
    try:
        alone = [np.asarray(forward(**{**case, wrt: r}), dtype=np.float64) for r in rows]
        again = np.asarray(forward(**{**case, wrt: rows[0]}), dtype=np.float64)
    except (Broken, TypeError, ValueError):  # single calls fail too: not a batching problem
        return ""
    if again.shape != alone[0].shape or not np.array_equal(again, alone[0], equal_nan=True):
        return ""  # nondeterministic alone: the message already says so
    try:
        together = np.asarray(call_batched(forward, case, wrt, rows), dtype=np.float64)
    except (Broken, TypeError, ValueError) as exc:
        return f"{claim}: {exc}; declare batched=False"
    if together.shape != (2, *alone[0].shape):
        return (f"{claim}: on inputs {rows.shape} it returned shape {together.shape}, not "
                f"{(2, *alone[0].shape)}; declare batched=False")
    # Rounding differs between a batched and a single call (another summation order): each
    # output may differ by eps times the magnitudes of its terms (``magnitudes``), or, where
    # those cannot be had, by eps * n * (max|output| + max|x| + 1)
    scale = max(max_abs(a) for a in alone) + max_abs(x) + 1.0
    tol = compare.SAFETY * eps_of(x.dtype) * scale * max(1, x.size)  # without magnitudes
    for r in range(2):
        a, b = together[r], alone[r]
        terms = magnitudes(forward, {**case, wrt: rows[r]})
        if terms is not None and terms.shape == b.shape:
            tol_r = compare.SAFETY * eps_of(x.dtype) * (terms + np.abs(b))
        else:
            tol_r = np.full(b.shape, tol)
        if not np.all((np.abs(a - b) <= tol_r) | (a == b) | (np.isnan(a) & np.isnan(b))):
            return (f"{claim}: row {r} of a batched call differs from the same input alone "
                    f"(max difference {float(np.nanmax(np.abs(a - b))):.3g}); "
                    "declare batched=False")
    return ""


def _plain(
    result: CaseResult, mode: str, loss: Loss, L0: float, a: np.ndarray, floor: float,
    y_floor: float, rng: np.random.Generator, directions: int,
    terms: Callable[[], float], same_floor: float,
) -> CaseResult:
    """Judge at the noise floor first: the measured noise is never below it, and a larger
    noise only widens tolerances, so a pass there stands -- unless a smaller step overruled
    D(h), on evidence (D(h) off by more than its noise) that a larger noise would withdraw.
    Anything else is judged again at the measured noise, if larger. ``same_floor`` (the
    linear ``noise_floor``) bounds the nondeterminism test. ``floor`` and
    ``y_floor`` are ``spread_floor``'s: eps * (|g*y|_2 + |g|_2 max|inputs|) and
    eps * |g*y|_2, the outputs' own rounding."""
    directions_from = rng.bit_generator.state
    verdict, overruled = _judge(result, mode, loss, L0, a, floor, rng, directions)
    if verdict.status != "pass" or overruled:
        L_table, noise = estimate_noise(loss, floor, rng)
        _same(L0, L_table, same_floor,
              "a call of its own and a row of a batched call, at the same input", terms)
        sigma = noise.sigma
        if noise.how in ("floor", "upper bound") and 0 < noise.measured < floor:
            # A noise level (or a bound on it) was found below the floor: the floor's
            # input term (|g|_2 max|inputs|, a guess at intermediate magnitudes) is not
            # there. The rounding of the outputs themselves stays a floor.
            sigma = max(noise.measured, y_floor)
        if sigma != floor:
            rng.bit_generator.state = directions_from  # the same random directions
            verdict, _ = _judge(result, mode, loss, L0, a, sigma, rng, directions)
        if noise.how == "upper bound":
            verdict.notes.append(
                "noise of L not resolved; its highest-order difference bounds it")
        elif noise.how == "outside":
            verdict.notes.append("noise of L not measured: every difference table left "
                                 "the forward's domain; taken at its floor")
    return verdict


def _pattern(
    structure: Any, case: dict[str, Any], x: np.ndarray, y: np.ndarray, requested: str,
    budget: int, max_exhaustive: int, notes: list[str],
) -> Pattern | None:
    """The declared structure's colouring when structured mode applies, else None (with a
    note when a declaration was given but not used)."""
    if structure is not None and not isinstance(structure, Structure) \
            and not callable(structure):
        raise InvalidCase(f"structure must be a gradcheck.structure declaration (windows, "
                          f"rows, elementwise, dense, sparse) or a function of the case "
                          f"returning one, got structure={structure!r}")
    if structure is None or requested == "directional":
        return None
    need = x.size * STRUCTURED_BYTES + OUTPUT_BYTES * y.size
    if need > budget:
        notes.append(f"structured mode would hold {need / 2**20:.0f} MiB of work arrays, over "
                     f"the {budget / 2**20:.0f} MiB budget: the declared structure is not used")
        return None
    try:
        declared = resolve(structure, case)
        pattern = None if declared is None else bind(declared, x.shape, y.shape)
    except DeclarationError as exc:
        notes.append(f"{exc}; checked without the declared structure")
        return None
    if pattern is None or pattern.count >= x.size:  # no saving (dense): element by element
        return None
    if pattern.count > max_exhaustive:
        notes.append(f"declared structure {pattern.label} needs {pattern.count} colours, "
                     f"over the {max_exhaustive} evaluated element by element")
        return None
    return pattern


def _fill(result: CaseResult, a: np.ndarray, v: Verdicts, shape: tuple[int, ...]) -> None:
    bad = ~v.ok & ~v.kink
    with np.errstate(invalid="ignore"):
        rel = np.nan_to_num(compare.rel_error(a, v.numeric, v.atol, result.rtol, v.ok),
                            nan=0.0, posinf=0.0)
    result.numeric = v.numeric.reshape(shape)
    result.rel_error = rel.reshape(shape)
    result.failed, result.kinked = bad.reshape(shape), v.kink.reshape(shape)
    result.checked, result.mismatches = a.size, int(bad.sum())
    result.nonsmooth = int(v.kink.sum())
    result.max_rel_error = float(rel.max(initial=0.0))
    result.max_abs_error = float(np.nan_to_num(np.abs(a - v.numeric), nan=0.0).max(initial=0.0))
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
        outside = int(v.outside.sum())
        parts = [f"{kinks} element(s) sit at a kink: the one-sided differences disagree and "
                 "the analytic value lies between them"] if kinks else []
        if blurred - outside:
            parts.append(f"{blurred - outside} element(s) are not resolved by finite "
                         "differences: they do not settle at any step down to the noise limit "
                         "or the last representable change of x")
        if outside:
            parts.append(f"{outside} element(s) are not resolved: every step tried left the "
                         "forward's domain (non-finite there)")
        result.diagnosis = "; ".join(parts)
    else:
        result.status = "pass"


def _same(L1: float, L2: float, floor: float, how: str,
          terms: Callable[[], float] = lambda: 0.0) -> None:
    """Two evaluations of L at one input agree to within SAFETY times its rounding noise:
    the noise floor, or (looked at only when that is exceeded) eps times the magnitudes of
    the forward's terms, which a batched call may round differently."""
    if abs(L1 - L2) <= compare.SAFETY * floor or abs(L1 - L2) <= compare.SAFETY * terms():
        return
    raise Broken(f"forward is nondeterministic: {how} gave {L1!r} and {L2!r}")


def _judge(
    template: CaseResult, mode: str, loss: Loss, L0: float, a: np.ndarray, sigma: float,
    rng: np.random.Generator, directions: int,
) -> tuple[CaseResult, bool]:
    """A fresh result, the verdict of ``mode`` at noise level sigma, and whether an element
    or direction agreed only on a smaller step, by evidence that depends on sigma."""
    result = dataclasses.replace(template, notes=list(template.notes), noise=sigma)
    if mode == "exhaustive":
        af = a.reshape(-1)
        v = compare_elements(loss, L0, af, np.arange(af.size), sigma, result.rtol)
        _fill(result, af, v, a.shape)
        return result, bool(v.overruled.any())
    return result, directional(result, loss, L0, a, sigma, rng, directions)


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
