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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck import repro
from gradcheck.check import check_vjp
from gradcheck.declare import Formula
from gradcheck.errors import InvalidCase
from gradcheck.hypothesis_compat import seed_alone
from gradcheck.result import CaseResult
from gradcheck.settings import EXAMPLES, Settings
from gradcheck.sweep import step_sweep

SEVERITY = {"pass": 0, "nonsmooth": 1, "fail": 2, "error": 3}


def _errstate() -> Any:
    """numpy's floating-point error handling while a formula is checked, whatever a loaded
    module set globally (np.seterr(all="raise") made the engine's own arithmetic raise): the
    engine finds non-finite values itself, so warnings would only be noise."""
    return np.errstate(all="ignore")


@dataclass
class FormulaResult:
    id: str
    derivation: str
    wrt: str
    variant: str
    expect: str
    source: str
    text: str
    dtype: str = "float64"  # the dtype every case of this formula was checked in
    runs_on: str = ""  # framework, device (and dtype) of an adapter's formula
    status: str = "error"
    cases: int = 0
    max_rel_error: float | None = None
    median_rel_error: float | None = None
    counterexample: dict[str, Any] | None = None
    coverage: dict[str, int] = field(default_factory=dict)
    case_errors: list[float] = field(default_factory=list)  # max rel error of each case
    sweep: dict[str, Any] | None = None  # step-size curve of one case (gradcheck.sweep)
    modes: dict[str, int] = field(default_factory=dict)  # cases checked in each mode
    evaluations: int = 0  # forward evaluations over those cases
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
        keys = ("id", "derivation", "wrt", "variant", "expect", "source", "text", "dtype",
                "runs_on", "status",
                "cases", "max_rel_error", "median_rel_error", "counterexample", "coverage",
                "message", "seconds", "case_errors", "sweep", "modes", "evaluations")
        out = {k: getattr(self, k) for k in keys}
        out["matches_expectation"] = self.matches_expectation
        return out


def blank(f: Formula, dtype: str = "float64") -> FormulaResult:
    return FormulaResult(f.id, f.derivation.name, f.wrt, f.variant, f.expect, f.source, f.text,
                         f.derivation.dtype or dtype, runs_on=f.derivation.runs_on)


class _CaseFailed(AssertionError):
    """A case whose verdict is 'fail': hypothesis shrinks it."""

    def __init__(self, case: dict[str, Any], result: CaseResult) -> None:
        super().__init__(result.explain())
        self.case, self.result = case, result


class _CaseErrored(_CaseFailed):
    """A case on which the forward or the formula misbehaved (a distinct bug for hypothesis)."""


class _CaseProblem(Exception):
    """The strategy drew an unusable case, classify() raised, or a callable exited."""


class _EngineBug(Exception):
    """check_vjp itself crashed on a valid case: a bug in gradcheck, not in the formula."""


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 1e300


MAX_PICTURE = 4096  # elements of |analytic - numeric| kept for the report's heat map


def _counterexample(formula: Formula, case: dict[str, Any], result: CaseResult
                    ) -> dict[str, Any]:
    s = result.summary()
    out = {k: s[k] for k in ("shapes", "params", "max_rel_error", "worst_index", "diagnosis",
                             "status", "message", "mismatches", "checked", "wrt", "seed",
                             "mode", "dtype")}
    out["evaluations"] = result.evaluations
    out["module"] = formula.derivation.module
    out.update(repro.values(case, result.upstream))  # the arrays themselves: reproducible
    a, n = result.analytic, result.numeric
    small = a is not None and n is not None and a.size <= MAX_PICTURE
    out["abs_error"] = np.abs(a - n.reshape(a.shape)).tolist() if small else None  # type: ignore
    return out


def _classifier(formula: Formula) -> Callable[[dict[str, Any]], str] | None:
    classify = formula.derivation.classify
    if classify is None:
        return None

    def safe(case: dict[str, Any]) -> str:
        try:
            return str(classify(case))
        except Exception as exc:
            raise _CaseProblem(
                f"classify() of derivation {formula.derivation.name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    return safe


def check_case(formula: Formula, case: dict[str, Any], settings: Settings) -> CaseResult:
    """One case of a formula, as a run checks it (the derivation's dtype and structure)."""
    d = formula.derivation
    return check_vjp(d.forward, formula.vjp, case, formula.wrt, seed=settings.seed,
                     mode=settings.mode, dtype=d.dtype or settings.dtype, batched=d.batched,
                     structure=d.structure.get(formula.wrt))


def search(settings: Settings, seed: int, explicit: bool) -> Callable[[Any], Any]:
    """The hypothesis seed and settings of a formula's search (no slow 'explain' phase;
    explicit examples only in the main search)."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity

    phases = [Phase.explicit] * explicit + [Phase.generate, Phase.target, Phase.shrink]
    configured = hypothesis.settings(
        max_examples=settings.examples, deadline=None, database=None, derandomize=False,
        verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False,
        suppress_health_check=[HealthCheck.too_slow], phases=phases,
    )
    return lambda test: hypothesis.seed(seed)(configured(test))


def run_formula(formula: Formula, settings: Settings | None = None) -> FormulaResult:
    """Check one formula over hypothesis-generated cases of its derivation."""
    import hypothesis
    from hypothesis import given
    from hypothesis.errors import StopTest

    settings = settings or Settings()
    d = formula.derivation
    classify = _classifier(formula)
    out = blank(formula, settings.dtype)
    errors: list[float] = []
    coverage: Counter[str] = Counter()
    worst: dict[str, Any] = {"status": "pass", "kink": None, "raised": None}
    failed = False
    sample: dict[str, Any] | None = None  # the last case: its step-size curve is reported

    @search(settings, settings.seed, explicit=True)
    @given(case=d.cases)
    def prop(case: dict[str, Any]) -> None:
        nonlocal failed, sample
        try:
            result = check_case(formula, case, settings)
        except InvalidCase as exc:
            raise _CaseProblem(f"the case strategy of {d.name!r} drew an unusable case "
                               f"(a problem of the strategy, not the formula): {exc}") from exc
        except SystemExit as exc:
            raise _CaseProblem(f"the forward or the formula called sys.exit({exc.code!r})"
                               ) from exc
        except Exception as exc:  # forward and vjp are guarded inside: this is the engine
            raise _EngineBug(f"{type(exc).__name__}: {exc}") from exc
        except (KeyboardInterrupt, StopTest):
            raise
        except BaseException as exc:  # e.g. asyncio.CancelledError from the user's code
            raise _CaseProblem(f"the forward or the formula raised {type(exc).__name__}: "
                               f"{exc}") from exc
        if not failed:  # cases replayed while shrinking are not counted
            out.cases += 1
            if classify is not None:
                coverage[classify(case)] += 1
            out.modes[result.mode] = out.modes.get(result.mode, 0) + 1
            out.evaluations += result.evaluations
            if result.status != "error":
                errors.append(result.max_rel_error)
            sample = case
            if SEVERITY[result.status] > SEVERITY[worst["status"]]:
                worst["status"] = result.status
            if result.status == "nonsmooth" and worst["kink"] is None:
                worst["kink"] = (case, result)
        if result.status == "error":
            failed = True
            worst["raised"] = _CaseErrored(case, result)
            raise worst["raised"]
        if result.status == "fail":
            failed = True
            worst["raised"] = _CaseFailed(case, result)
            raise worst["raised"]
        hypothesis.target(_finite(result.max_rel_error), label="max relative error")

    start = time.perf_counter()
    try:
        with seed_alone(), _errstate():
            try:
                prop()
            except (_CaseFailed, _CaseProblem, _EngineBug, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if worst["raised"] is None:
                    raise
                # hypothesis could not show the failing case (a value whose repr raises):
                # the failure found stands
                raise worst["raised"] from exc
        out.status = worst["status"]
        if worst["kink"] is not None:
            out.failing_case, out.failing_result = worst["kink"]
            out.counterexample = _counterexample(formula, *worst["kink"])
    except _CaseFailed as exc:
        out.status = exc.result.status
        out.failing_case, out.failing_result = exc.case, exc.result
        out.counterexample = _counterexample(formula, exc.case, exc.result)
        if exc.result.status == "error":
            out.message = exc.result.message
    except _EngineBug as exc:
        out.status, out.internal = "error", True
        cause = exc.__cause__ or exc
        out.message = f"internal error in gradcheck (not in the formula): " \
                      f"{_crash_message(formula, cause)}"
    except _CaseProblem as exc:
        out.status, out.message = "error", f"{formula.id}: {exc}"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # raised while drawing a case: the strategy
        out.status = "error"
        out.message = _crash_message(formula, exc)
    if out.status == "error" and out.failing_result is not None:  # raised on a case
        from gradcheck.after_error import search_past_error  # (it imports this module)

        search_past_error(formula, settings, out, errors, coverage)
    out.seconds = time.perf_counter() - start
    if out.expect != "pass" and out.status == "pass" and settings.examples < EXAMPLES:
        out.message = (f"{settings.examples} examples may be too few to show this formula's "
                       f"known {out.expect} (declared expect={out.expect!r}); the default is "
                       f"{EXAMPLES}")
    out.coverage = dict(sorted(coverage.items()))
    if errors:
        out.max_rel_error = float(max(errors))
        out.median_rel_error = float(statistics.median(errors))
        out.case_errors = [float(e) for e in errors]
    curve_case = out.failing_case if out.failing_case is not None else sample
    if curve_case is not None and out.status != "error":
        try:
            with _errstate():
                out.sweep = step_sweep(d.forward, formula.vjp, curve_case, formula.wrt,
                                       seed=settings.seed, batched=d.batched)
        except KeyboardInterrupt:
            raise
        except BaseException:  # the verdict stands; only the picture is missing
            out.sweep = None
    return out


def _crash_message(formula: Formula, exc: BaseException) -> str:
    from hypothesis.errors import FailedHealthCheck, HypothesisException

    if isinstance(exc, FailedHealthCheck):
        return f"{formula.id}: the case strategy of {formula.derivation.name!r} is unhealthy " \
               f"(a problem of the strategy, not the formula): {exc}"
    if isinstance(exc, HypothesisException) and "Flaky" in type(exc).__name__:
        return f"{formula.id}: the same case gave different verdicts when replayed: the " \
               f"forward or the formula is nondeterministic: {exc}"
    if isinstance(exc, HypothesisException):
        return f"{formula.id}: hypothesis could not run the case strategy: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
    return f"{formula.id}: the case strategy of {formula.derivation.name!r} raised " \
           f"{type(exc).__name__}: {exc}\n{tb}"
