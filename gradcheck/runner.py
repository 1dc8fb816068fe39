"""Property-based runs: hypothesis draws cases for a formula, the engine checks each one.

A failing case is shrunk by hypothesis to a minimal counterexample; the search is steered
toward large errors with ``hypothesis.target``. Only the cases drawn before the first
failure count as checked (shrinking replays do not). A formula that crashes is recorded
as ``error`` and the run goes on with the others.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck.check import check_vjp
from gradcheck.declare import Formula
from gradcheck.result import CaseResult

SEVERITY = {"pass": 0, "nonsmooth": 1, "fail": 2, "error": 3}


@dataclass
class Settings:
    examples: int = 100
    seed: int = 0
    mode: str = "auto"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if not isinstance(self.examples, int) or self.examples < 1:
            raise ValueError(f"examples must be an integer >= 1, got examples={self.examples!r}")


@dataclass
class FormulaResult:
    id: str
    derivation: str
    wrt: str
    variant: str
    expect: str
    source: str
    text: str
    status: str = "error"
    cases: int = 0
    max_rel_error: float | None = None
    median_rel_error: float | None = None
    counterexample: dict[str, Any] | None = None
    coverage: dict[str, int] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    # the minimal failing case and its full result, for `explain` (not serialised)
    failing_case: dict[str, Any] | None = field(default=None, repr=False)
    failing_result: CaseResult | None = field(default=None, repr=False)

    @property
    def matches_expectation(self) -> bool:
        return self.status == self.expect

    def to_dict(self) -> dict[str, Any]:
        keys = ("id", "derivation", "wrt", "variant", "expect", "source", "text", "status",
                "cases", "max_rel_error", "median_rel_error", "counterexample", "coverage",
                "message", "seconds")
        out = {k: getattr(self, k) for k in keys}
        out["matches_expectation"] = self.matches_expectation
        return out


def _blank(f: Formula) -> FormulaResult:
    return FormulaResult(f.id, f.derivation.name, f.wrt, f.variant, f.expect, f.source, f.text)


class _CaseFailed(AssertionError):
    def __init__(self, case: dict[str, Any], result: CaseResult) -> None:
        super().__init__(result.explain())
        self.case, self.result = case, result


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 1e300


def _counterexample(result: CaseResult) -> dict[str, Any]:
    s = result.summary()
    return {k: s[k] for k in ("shapes", "params", "max_rel_error", "worst_index", "diagnosis",
                              "status", "message", "mismatches", "checked")}


def run_formula(formula: Formula, settings: Settings | None = None) -> FormulaResult:
    """Check one formula over hypothesis-generated cases of its derivation."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity, given

    settings = settings or Settings()
    d = formula.derivation
    out = _blank(formula)
    errors: list[float] = []
    coverage: Counter[str] = Counter()
    worst: dict[str, Any] = {"status": "pass", "kink": None}
    failed = False

    @hypothesis.seed(settings.seed)
    @hypothesis.settings(
        max_examples=settings.examples, deadline=None, database=None, derandomize=False,
        verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],  # no slow 'explain'
    )
    @given(case=d.cases)
    def prop(case: dict[str, Any]) -> None:
        nonlocal failed
        result = check_vjp(d.forward, formula.vjp, case, formula.wrt, seed=settings.seed,
                           mode=settings.mode, dtype=settings.dtype, batched=d.batched)
        if not failed:
            out.cases += 1
            if d.classify is not None:
                coverage[d.classify(case)] += 1
            if result.status != "error":
                errors.append(result.max_rel_error)
            if SEVERITY[result.status] > SEVERITY[worst["status"]]:
                worst["status"] = result.status
            if result.status == "nonsmooth" and worst["kink"] is None:
                worst["kink"] = (case, result)
        if result.status in ("fail", "error"):
            failed = True
            raise _CaseFailed(case, result)
        hypothesis.target(_finite(result.max_rel_error), label="max relative error")

    start = time.perf_counter()
    try:
        prop()
        out.status = worst["status"]
        if worst["kink"] is not None:
            out.failing_case, out.failing_result = worst["kink"]
            out.counterexample = _counterexample(out.failing_result)
    except _CaseFailed as exc:
        out.status = exc.result.status
        out.failing_case, out.failing_result = exc.case, exc.result
        out.counterexample = _counterexample(exc.result)
        if exc.result.status == "error":
            out.message = exc.result.message
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        out.status = "error"
        out.message = _crash_message(formula, exc)
    out.seconds = time.perf_counter() - start
    out.coverage = dict(sorted(coverage.items()))
    if errors:
        out.max_rel_error = float(max(errors))
        out.median_rel_error = float(statistics.median(errors))
    return out


def _crash_message(formula: Formula, exc: BaseException) -> str:
    from hypothesis.errors import FailedHealthCheck, HypothesisException

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
    if isinstance(exc, FailedHealthCheck):
        return f"{formula.id}: the case strategy of {formula.derivation.name!r} is unhealthy " \
               f"(a problem of the strategy, not the formula): {exc}"
    if isinstance(exc, HypothesisException):
        return f"{formula.id}: hypothesis could not run the case strategy: {exc}"
    return f"{formula.id}: {type(exc).__name__}: {exc}\n{tb}"


@dataclass
class Run:
    settings: Settings
    results: list[FormulaResult]
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.matches_expectation for r in self.results)


Progress = Callable[[str, int, int], None]  # (formula id, finished so far, total)


def run_all(
    formulas: Iterable[Formula],
    settings: Settings | None = None,
    progress: Progress | None = None,
    *,
    jobs: int = 1,
    modules: list[str] | None = None,
) -> Run:
    """Run formulas in order (or in ``jobs`` worker processes, which load ``modules``).

    Ctrl-C keeps every formula finished so far; the run is then marked interrupted.
    """
    settings = settings or Settings()
    formulas = list(formulas)
    run = Run(settings, [])
    start = time.perf_counter()
    try:
        if jobs > 1 and modules is not None and len(formulas) > 1:
            _run_parallel(run, formulas, modules, jobs, progress)
        else:
            for i, f in enumerate(formulas):
                if progress:
                    progress(f.id, i, len(formulas))
                run.results.append(run_formula(f, settings))
    except KeyboardInterrupt:
        run.interrupted = True
    order = {f.id: i for i, f in enumerate(formulas)}
    run.results.sort(key=lambda r: order[r.id])
    run.seconds = time.perf_counter() - start
    return run


_WORKER: dict[str, Formula] = {}


def _load_worker(modules: list[str]) -> None:
    from gradcheck.declare import collect_formulas

    _WORKER.update({f.id: f for f in collect_formulas(modules)})


def _run_in_worker(formula_id: str, settings: Settings) -> FormulaResult:
    return run_formula(_WORKER[formula_id], settings)


def _run_parallel(
    run: Run, formulas: list[Formula], modules: list[str], jobs: int, progress: Progress | None
) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, initializer=_load_worker, initargs=(modules,)) as pool:
        futures = {pool.submit(_run_in_worker, f.id, run.settings): f for f in formulas}
        try:
            for done, future in enumerate(as_completed(futures)):
                f = futures[future]
                try:
                    run.results.append(future.result())
                except Exception as exc:  # the worker died: record it, keep the others
                    crashed = _blank(f)
                    crashed.message = f"{f.id}: worker failed: {type(exc).__name__}: {exc}"
                    run.results.append(crashed)
                if progress:
                    progress(f.id, done + 1, len(formulas))
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise
