"""Property-based runs: hypothesis draws cases for a formula, the engine checks each one.

A failing case is shrunk by hypothesis to a minimal counterexample; the search is steered
toward large errors with ``hypothesis.target``. Only the cases drawn up to the first
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

from gradcheck.check import MODES, check_vjp
from gradcheck.declare import Formula
from gradcheck.errors import InvalidCase
from gradcheck.result import CaseResult

SEVERITY = {"pass": 0, "nonsmooth": 1, "fail": 2, "error": 3}
DTYPES = ("float64", "float32")


@dataclass
class Settings:
    examples: int = 100
    seed: int = 0
    mode: str = "auto"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if isinstance(self.examples, bool) or not isinstance(self.examples, int) \
                or self.examples < 1:
            raise ValueError(f"examples must be an integer >= 1, got examples={self.examples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got seed={self.seed!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got mode={self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got dtype={self.dtype!r}")


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
    # the engine itself crashed (a bug in gradcheck, not in the formula; not serialised)
    internal: bool = field(default=False, repr=False)

    @property
    def matches_expectation(self) -> bool:
        return self.status == self.expect

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (JSON, and pytest-xdist's user_properties)."""
        keys = ("id", "derivation", "wrt", "variant", "expect", "source", "text", "status",
                "cases", "max_rel_error", "median_rel_error", "counterexample", "coverage",
                "message", "seconds")
        out = {k: getattr(self, k) for k in keys}
        out["matches_expectation"] = self.matches_expectation
        return out


def _blank(f: Formula) -> FormulaResult:
    return FormulaResult(f.id, f.derivation.name, f.wrt, f.variant, f.expect, f.source, f.text)


class _CaseFailed(AssertionError):
    """A case whose verdict is 'fail': hypothesis shrinks it."""

    def __init__(self, case: dict[str, Any], result: CaseResult) -> None:
        super().__init__(result.explain())
        self.case, self.result = case, result


class _CaseErrored(_CaseFailed):
    """A case on which the forward or the formula misbehaved (a distinct bug for hypothesis)."""


class _EngineBug(Exception):
    """check_vjp itself crashed on a valid case: a bug in gradcheck, not in the formula."""


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 1e300


def _counterexample(result: CaseResult) -> dict[str, Any]:
    s = result.summary()
    return {k: s[k] for k in ("shapes", "params", "max_rel_error", "worst_index", "diagnosis",
                              "status", "message", "mismatches", "checked")}


def _classifier(formula: Formula) -> Callable[[dict[str, Any]], str] | None:
    classify = formula.derivation.classify
    if classify is None:
        return None

    def safe(case: dict[str, Any]) -> str:
        try:
            return str(classify(case))
        except Exception as exc:
            raise RuntimeError(
                f"classify() of derivation {formula.derivation.name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    return safe


def run_formula(formula: Formula, settings: Settings | None = None) -> FormulaResult:
    """Check one formula over hypothesis-generated cases of its derivation."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity, given

    settings = settings or Settings()
    d = formula.derivation
    classify = _classifier(formula)
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
        try:
            result = check_vjp(d.forward, formula.vjp, case, formula.wrt, seed=settings.seed,
                               mode=settings.mode, dtype=settings.dtype, batched=d.batched)
        except InvalidCase:  # the derivation's strategy drew an unusable case
            raise
        except Exception as exc:  # forward and vjp are guarded inside: this is the engine
            raise _EngineBug(f"{type(exc).__name__}: {exc}") from exc
        if not failed:  # cases replayed while shrinking are not counted
            out.cases += 1
            if classify is not None:
                coverage[classify(case)] += 1
            if result.status != "error":
                errors.append(result.max_rel_error)
            if SEVERITY[result.status] > SEVERITY[worst["status"]]:
                worst["status"] = result.status
            if result.status == "nonsmooth" and worst["kink"] is None:
                worst["kink"] = (case, result)
        if result.status == "error":
            failed = True
            raise _CaseErrored(case, result)
        if result.status == "fail":
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
    except _EngineBug as exc:
        out.status, out.internal = "error", True
        cause = exc.__cause__ or exc
        out.message = f"internal error in gradcheck (not in the formula): " \
                      f"{_crash_message(formula, cause)}"
    except (Exception, SystemExit) as exc:  # a formula calling sys.exit() is an error too
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

    if isinstance(exc, FailedHealthCheck):
        return f"{formula.id}: the case strategy of {formula.derivation.name!r} is unhealthy " \
               f"(a problem of the strategy, not the formula): {exc}"
    if isinstance(exc, HypothesisException):
        return f"{formula.id}: hypothesis could not run the case strategy: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
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
    """Run formulas (or in ``jobs`` worker processes, which load ``modules``), sorted by id.

    The results are the same, in the same order, whatever ``jobs`` is. Ctrl-C keeps every
    formula finished so far; the run is then marked interrupted.
    """
    settings = settings or Settings()
    formulas = sorted(formulas, key=lambda f: f.id)
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
            if progress and formulas:
                progress("", len(formulas), len(formulas))
    except KeyboardInterrupt:
        run.interrupted = True
    order = {f.id: i for i, f in enumerate(formulas)}
    run.results.sort(key=lambda r: order[r.id])
    run.seconds = time.perf_counter() - start
    return run


_WORKER: dict[str, Formula] = {}


def _load_worker(modules: list[str]) -> None:
    import signal

    from gradcheck.declare import collect_formulas

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    _WORKER.update({f.id: f for f in collect_formulas(modules)})


def _run_in_worker(formula_id: str, settings: Settings) -> FormulaResult:
    return run_formula(_WORKER[formula_id], settings)


def _run_parallel(
    run: Run, formulas: list[Formula], modules: list[str], jobs: int, progress: Progress | None
) -> None:
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(min(jobs, len(formulas)), initializer=_load_worker,
                               initargs=(modules,))
    futures: dict[Future[FormulaResult], Formula] = {}
    collected: set[str] = set()

    def collect(future: Future[FormulaResult]) -> None:
        f = futures[future]
        try:
            run.results.append(future.result())
        except Exception as exc:  # the worker died: record it, keep the others
            crashed = _blank(f)
            crashed.message = f"{f.id}: worker failed: {type(exc).__name__}: {exc}"
            run.results.append(crashed)
        collected.add(f.id)

    try:
        futures = {pool.submit(_run_in_worker, f.id, run.settings): f for f in formulas}
        if progress:
            progress(formulas[0].id, 0, len(formulas))
        for done, future in enumerate(as_completed(futures), start=1):
            collect(future)
            if progress:
                pending = [f.id for fu, f in futures.items() if not fu.done()]
                progress(pending[0] if pending else "", done, len(formulas))
    except BaseException:  # Ctrl-C above all: keep what finished, stop the rest at once
        for future in futures:
            if future.done() and not future.cancelled() and futures[future].id not in collected:
                collect(future)
        processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown(wait=True)
