"""After a formula raised: keep looking for a case on which it returns wrong values.

Hypothesis shrinks towards the crash, so a formula that raises on one geometry and is
silently wrong on another would be reported only as ``error``. Once the run has ended on
an error, a second search, with a seed of its own (``seed + 1``), draws ``examples`` more
cases and shrinks the first one on which the formula returns wrong values; a case on which
it raises counts as drawn but is not a find, so the shrinker moves away from it.
(Rejecting those cases instead would let hypothesis draw ten times the examples or more
when the formula raises almost everywhere, each draw costing a check.) If it finds one, the
formula's status is ``fail``, its counterexample is the wrong case with the crash under
``raises_on``, and the message reads "raises on X; wrong on Y". The cases checked there
count as cases, like any other.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gradcheck import runner
from gradcheck.declare import Formula
from gradcheck.hypothesis_compat import seed_alone
from gradcheck.result import CaseResult


class _Wrong(AssertionError):
    def __init__(self, case: dict[str, Any], result: CaseResult) -> None:
        super().__init__(result.explain())
        self.case, self.result = case, result


def search_past_error(
    formula: Formula, settings: runner.Settings, out: runner.FormulaResult,
    errors: list[float], coverage: Counter[str],
) -> None:
    """Look past ``out``'s error for a wrong value; update ``out`` if one is found."""
    import hypothesis
    from hypothesis import given

    d = formula.derivation
    classify = runner._classifier(formula)
    crashed = out.failing_result
    if crashed is None:
        return
    checked, raised, found = 0, 0, False  # counted up to the first wrong case

    @runner.search(settings, settings.seed + 1, explicit=False)
    @given(case=d.cases)
    def prop(case: dict[str, Any]) -> None:
        nonlocal checked, raised, found
        result = runner.check_case(formula, case, settings)
        if result.status == "error":  # not a find: the shrinker moves away from it
            raised += 0 if found else 1
            return
        if not found:  # (shrinking replays are not counted)
            checked += 1
            errors.append(result.max_rel_error)
            if classify is not None:
                coverage[classify(case)] += 1
        if result.status == "fail":
            found = True
            raise _Wrong(case, result)
        hypothesis.target(runner._finite(result.max_rel_error), label="max relative error")

    wrong: _Wrong | None = None
    stopped = False
    try:
        with seed_alone(), runner._errstate():
            prop()
    except _Wrong as exc:
        wrong = exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the strategy, the engine or user code: the error stands
        out.message += f"\n(the search past the error stopped: {type(exc).__name__}: {exc})"
        stopped = True
    out.cases += checked
    if wrong is None:
        if stopped:
            return
        out.message += (f"\n(searched past the error: right values on {checked} cases that do "
                        f"not raise; {raised} more raised)" if checked else
                        f"\n(searched past the error: all {raised} more cases raised)")
        return
    out.status = "fail"
    out.failing_case, out.failing_result = wrong.case, wrong.result
    out.counterexample = {**runner._counterexample(formula, wrong.case, wrong.result),
                          "raises_on": out.counterexample}
    out.message = (f"raises on {crashed.case_text()}; wrong on {wrong.result.case_text()}\n"
                   f"{out.message}")
