"""The catalogue's verdicts, reproduced: references pass, known-wrong transcriptions fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradcheck.cli import builtin_modules
from gradcheck.declare import collect_formulas
from gradcheck.runner import Settings, run_formula

FORMULAS = {f.id: f for f in collect_formulas(builtin_modules())}  # a new module is included
REFERENCES = sorted(k for k, f in FORMULAS.items() if f.variant == "reference")
AS_WRITTEN = sorted(k for k, f in FORMULAS.items() if f.variant == "as-written")


@pytest.mark.slow
@pytest.mark.parametrize("fid", REFERENCES)
def test_reference_formula_passes_over_200_cases(fid):
    result = run_formula(FORMULAS[fid], Settings(examples=200, seed=1))
    assert result.status == "pass", result.failing_result and result.failing_result.explain()
    assert result.cases >= 200


FINDINGS = (Path(__file__).parent.parent / "docs" / "findings.md").read_text()


@pytest.mark.parametrize("fid", AS_WRITTEN)
def test_as_written_verdict_is_reproduced_as_documented(fid):
    """At the documented settings (seed 0, 100 examples) the verdict and the minimal
    counterexample are the ones docs/findings.md reports."""
    formula = FORMULAS[fid]
    result = run_formula(formula, Settings(examples=100, seed=0))
    assert result.status == formula.expect, result.message
    row = next(line for line in FINDINGS.splitlines() if line.startswith(f"| `{fid}` |"))
    assert ("**wrong**" in row) == (formula.expect == "fail"), row
    if formula.expect == "fail":
        c = result.counterexample
        assert c is not None and c["status"] == "fail" and c["diagnosis"]
        for name, shape in c["shapes"].items():
            assert f"{name} ({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})" \
                in row, (row, c["shapes"])
        # shrunk: no array in the minimal counterexample has more than 8 elements
        assert all(_size(shape) <= 8 for shape in c["shapes"].values()), c


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


@pytest.mark.slow
def test_coverage_reaches_all_three_window_regimes():
    result = run_formula(FORMULAS["conv2d.dx[reference]"], Settings(examples=200, seed=3))
    seen = " ".join(result.coverage)
    for regime in ("overlap", "tile", "gap"):
        assert regime in seen, result.coverage
