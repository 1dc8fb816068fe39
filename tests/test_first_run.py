"""Issue 14: what a new user trips over: reproducible counterexamples, the installed
command, own modules only, any variant name, one module rule, float32, -n, batched=True."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradcheck import check_vjp, cli
from gradcheck.declare import Derivation, collect_formulas
from gradcheck.repro import file_name, load_case

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
GOOD = str(FIXTURES / "good.py")
LARGE = str(FIXTURES / "large.py")
WRONG = "softmax_ce.dy[as-written]"


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def formula(fid: str, module: str):
    return next(f for f in collect_formulas([module]) if f.id == fid)


def recheck(f, meta, case, upstream):
    return check_vjp(f.derivation.forward, f.vjp, case, f.wrt, upstream=upstream,
                     seed=meta["seed"], mode=meta["mode"], dtype=meta["dtype"],
                     batched=f.derivation.batched)


# ------------------------------------------------------------- 1. counterexample values

def test_json_counterexample_values_read_back_exactly_and_fail_again(tmp_path):
    target = tmp_path / "r.json"
    result = invoke("check", WRONG, "--examples", "20", "--format", "json", "-o", str(target))
    assert result.exit_code == 0, result.output
    c = json.loads(target.read_text())["formulas"][0]["counterexample"]
    assert set(c["inputs"]) == {"y"} and c["upstream"]["values"] is not None
    meta, case, upstream = load_case(target, WRONG)
    f = formula(WRONG, "derivations.softmax_ce")
    # the run's own failing case, bit for bit
    run = __import__("gradcheck.runner", fromlist=["run_formula"]).run_formula(
        f, __import__("gradcheck.settings", fromlist=["Settings"]).Settings(examples=20))
    assert np.array_equal(case["y"], run.failing_case["y"])
    assert np.array_equal(upstream, run.failing_result.upstream)
    again = recheck(f, meta, case, upstream)
    assert again.status == "fail"
    assert again.max_rel_error == run.failing_result.max_rel_error


def test_explain_prints_values_and_a_snippet_that_reproduces(tmp_path, monkeypatch):
    result = invoke("explain", WRONG, "--examples", "20")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Values:\ny = [" in out and "upstream dy = " in out
    snippet = out.split("Reproduce:\n", 1)[1].split("\n\nCriterion:")[0]
    assert out.count("element agrees when") == 1  # the criterion once, at the end
    monkeypatch.chdir(ROOT)
    namespace: dict = {"print": lambda *a: None}
    exec(snippet, namespace)  # noqa: S102 (the snippet gradcheck printed)
    assert namespace["r"].status == "fail"


def test_save_case_then_case_rechecks_exactly_that_case(tmp_path):
    saved = tmp_path / "c.npz"
    first = invoke("explain", WRONG, "--examples", "20", "--save-case", str(saved))
    assert first.exit_code == 0 and saved.is_file(), first.output
    again = invoke("explain", WRONG, "--case", str(saved))
    assert again.exit_code == 0, again.output  # fails, as this formula is expected to
    assert "FAIL" in again.stdout and "Values:" in again.stdout
    # the same case against the correct formula passes
    right = invoke("explain", "softmax_ce.dy[reference]", "--case", str(saved))
    assert right.exit_code == 0 and "PASS" in right.stdout, right.output
    wrong_wrt = invoke("explain", "linear.dx[reference]", "--case", str(saved))
    assert wrong_wrt.exit_code == 2 and "'y'" in wrong_wrt.stderr


def test_large_counterexample_goes_to_an_npz_beside_the_report(tmp_path):
    target = tmp_path / "r.json"
    result = invoke("check", "--module", LARGE, "--examples", "5", "--format", "json",
                    "-o", str(target))
    assert result.exit_code == 1, result.output
    c = json.loads(target.read_text())["formulas"][0]["counterexample"]
    assert c["inputs"]["x"]["values"] is None and c["inputs"]["x"]["shape"] == [40, 30]
    assert c["npz"] == f"r.json.cases/{file_name('fx_big.dx[reference]')}"
    assert (tmp_path / c["npz"]).is_file()
    meta, case, upstream = load_case(target, "fx_big.dx[reference]")
    assert case["x"].shape == (40, 30) and upstream.shape == (40, 30)
    assert recheck(formula("fx_big.dx[reference]", LARGE), meta, case, upstream).status == "fail"
    by_report = invoke("explain", "fx_big.dx[reference]", "-m", LARGE, "--case", str(target))
    assert by_report.exit_code == 1 and "x = <float64 array of shape (40, 30)>" in by_report.stdout


def test_markdown_and_html_show_values_not_a_dict_repr(tmp_path):
    md = invoke("check", WRONG, "--examples", "20", "--format", "markdown")
    assert "Values:" in md.stdout and "check_vjp(" in md.stdout
    assert md.stdout.count("element agrees when") == 1
    page = tmp_path / "r.html"
    invoke("check", WRONG, "--examples", "20", "--format", "html", "-o", str(page))
    text = page.read_text()
    assert "Case: y (2,); gt=0" in text and "upstream dy = " in text
    assert "{&#x27;y&#x27;: [2]}" not in text and "check_vjp(" in text  # not a dict repr
    assert "Checked in float64" in text


def test_html_hint_names_the_installed_package(monkeypatch):
    import gradcheck.html

    monkeypatch.setattr(gradcheck.html, "_pyplot", lambda: None)
    page = invoke("check", "linear.db[reference]", "--examples", "2", "--format", "html").stdout
    assert "pip install 'gradcheck[report]'" in page


def test_plugin_failure_text_has_values_and_the_criterion_once(pytester: pytest.Pytester):
    pytester.makepyfile(mine="""
import numpy as np
from hypothesis import strategies as st
from gradcheck import Derivation
from gradcheck.strategies import float_arrays
sq = Derivation("sq", lambda x: x ** 2, st.fixed_dictionaries({"x": float_arrays((2,))}))
sq.formula("x", lambda dy, x: dy * x)
""")
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=mine.py",
                                "--gradcheck-examples=10")
    out = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "Values:" in out and "upstream dy = " in out and "check_vjp(" in out
    assert out.count("element agrees when") == 1


# ------------------------------------------------------------- 2, 3. command, modules

def test_console_script_is_declared():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="gradcheck")
    assert script.value == "gradcheck.cli:main"


def test_module_alone_checks_only_that_module():
    only = invoke("check", "-m", GOOD, "--examples", "5", "--format", "json")
    ids = [f["id"] for f in json.loads(only.stdout)["formulas"]]
    assert ids and all(i.startswith("fx_square") for i in ids)


# ------------------------------------------------------------- 4. variant names

def test_any_identifier_like_variant_name_and_unique_ids():
    d = Derivation("d", lambda x: x, cases=None)
    for v in ("fast", "blas_2", "as-written", "reference", "v2-fused"):
        d.formula("x", lambda dy, x: dy, variant=v)
    assert [f.id for f in d.formulas][:2] == ["d.dx[fast]", "d.dx[blas_2]"]
    with pytest.raises(ValueError, match="duplicate formula id 'd.dx\\[fast\\]'"):
        d.formula("x", lambda dy, x: dy, variant="fast")
    for bad in ("", "two words", "-x", "a]b", 3):
        with pytest.raises(ValueError, match="variant must be an identifier-like name"):
            d.formula("x", lambda dy, x: dy, variant=bad)


# ------------------------------------------------------------- 5. one module rule

PACKAGE_MODULE = """
from helper import SCALE
import numpy as np
from hypothesis import strategies as st
from gradcheck import Derivation
from gradcheck.strategies import float_arrays
sc = Derivation("sc", lambda x: SCALE * x, st.fixed_dictionaries({"x": float_arrays((2,))}))
sc.formula("x", lambda dy, x: SCALE * dy)
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("SCALE = 3.0\n")
    (pkg / "formulas.py").write_text(PACKAGE_MODULE.replace("from helper", "from mypkg.helper"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helper.py").write_text("SCALE = 2.0\n")
    (tmp_path / "sub" / "mine.py").write_text(PACKAGE_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))  # gradcheck itself, for the subprocesses
    return tmp_path


def test_cli_dotted_name_from_cwd_and_path_with_a_helper_beside_it(package):
    assert str(package) not in sys.path
    dotted = invoke("list", "-m", "mypkg.formulas")
    assert dotted.exit_code == 0 and "sc.dx[reference]" in dotted.stdout, dotted.output
    by_path = invoke("check", "-m", "sub/mine.py", "--examples", "3")
    assert by_path.exit_code == 0, by_path.output
    assert str(package / "sub") not in sys.path  # importable only while it loaded


def test_plugin_resolves_like_the_cli_under_the_pytest_script(package):
    pytest_script = Path(sys.executable).with_name("pytest")
    for spec in ("mypkg.formulas", "sub/mine.py"):
        done = subprocess.run([str(pytest_script), "-p", "no:cacheprovider", "--gradcheck",
                               f"--gradcheck-module={spec}", "--gradcheck-examples=3", "-q"],
                              cwd=package, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout


def test_gradcheck_option_without_the_flag_warns(pytester: pytest.Pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--gradcheck-module=nothing.py")
    assert "--gradcheck-module given without --gradcheck" in result.stdout.str()


# ------------------------------------------------------------- 6. dtype

def test_dtype_float32_is_used_and_reported(tmp_path):
    result = invoke("check", WRONG, "--examples", "20", "--dtype", "float32",
                    "--format", "json")
    report = json.loads(result.stdout)
    f = report["formulas"][0]
    assert report["settings"]["dtype"] == "float32" and f["dtype"] == "float32"
    assert f["counterexample"]["dtype"] == "float32" and f["status"] == "fail"
    table = invoke("check", "linear.db[reference]", "--examples", "3", "--dtype", "float32")
    assert "Checked in float32" in table.stdout


def test_plugin_dtype_option(pytester: pytest.Pytester):
    pytester.makepyfile(mine="""
import numpy as np
from hypothesis import strategies as st
from gradcheck import Derivation
from gradcheck.strategies import float_arrays
sq = Derivation("sq", lambda x: x ** 2, st.fixed_dictionaries({"x": float_arrays((2,))}))
sq.formula("x", lambda dy, x: 2 * dy * x)
""")
    target = pytester.path / "r.json"
    pytester.runpytest("--gradcheck", "--gradcheck-module=mine.py", "--gradcheck-examples=5",
                       "--gradcheck-dtype=float32", f"--gradcheck-report={target}")
    report = json.loads(target.read_text())
    assert report["settings"]["dtype"] == "float32"
    assert report["formulas"][0]["dtype"] == "float32"


# ------------------------------------------------------------- 7. -n

def test_dash_n_is_workers_not_examples():
    result = invoke("check", "linear.db", "-n", "2", "--format", "json")
    report = json.loads(result.stdout)
    assert report["settings"]["examples"] == 100
    assert [f["cases"] for f in report["formulas"]] == [100, 100]


def test_too_few_examples_for_a_known_failure_are_flagged():
    rare = str(FIXTURES / "rare.py")
    few = invoke("check", "-m", rare, "--examples", "2")
    assert few.exit_code == 1 and "pass" in few.stdout
    assert "2 examples may be too few to show this formula's known fail" in few.stdout
    enough = invoke("check", "-m", rare)
    assert enough.exit_code == 0 and "too few" not in enough.stdout, enough.stdout


# ------------------------------------------------------------- 8. batched=True

def test_a_forward_that_does_not_broadcast_is_named():
    x = np.array([1.0, 2.0, 3.0])
    centred = check_vjp(lambda x: x - x.mean(), lambda dy, x: dy - dy.mean(), {"x": x}, "x",
                        batched=True)
    assert centred.status == "error"
    assert "does not broadcast over a leading batch axis (declared batched=True)" \
        in centred.message
    summed = check_vjp(lambda x: x.sum(axis=0), lambda dy, x: np.broadcast_to(dy, x.shape) * 1,
                       {"x": np.ones((3, 2))}, "x", batched=True)
    assert "declare batched=False" in summed.message
    # a forward that does broadcast keeps its real verdict
    wrong = check_vjp(lambda x: x ** 2, lambda dy, x: dy * x, {"x": x}, "x", batched=True)
    assert wrong.status == "fail" and "batch" not in wrong.message


# ------------------------------------------------------------- 9. smaller points

def test_positional_only_callables():
    x = np.linspace(-2, 2, 5)
    assert check_vjp(np.tanh, lambda dy, x: dy * (1 - np.tanh(x) ** 2), {"x": x}, "x").ok
    assert not check_vjp(np.tanh, lambda dy, x, /: dy, {"x": x}, "x").ok


def test_one_element_at_half_the_numeric_value_says_so():
    r = check_vjp(lambda x: x ** 2, lambda dy, x: dy * x, {"x": np.array([1.5])}, "x")
    assert "analytic = 0.5 × numeric" in r.diagnosis


def test_unexpected_nonsmooth_is_explained_in_the_table(tmp_path):
    relu = (FIXTURES / "nonsmooth.py").read_text().replace('expect="nonsmooth", ', "")
    (tmp_path / "relu.py").write_text(relu)
    result = invoke("check", "-m", str(tmp_path / "relu.py"), "--examples", "30")
    assert result.exit_code == 1 and "UNEXPECTED (expected pass)" in result.stdout
    assert "nonsmooth: a case sat at a kink" in result.stdout
    assert "expect='nonsmooth'" in result.stdout
    expected = invoke("check", "-m", str(FIXTURES / "nonsmooth.py"), "--examples", "30")
    assert expected.exit_code == 0 and "a case sat at a kink" not in expected.stdout


def test_one_case_is_singular(tmp_path, monkeypatch):
    from gradcheck.report import cases_text

    monkeypatch.chdir(tmp_path)  # explain saves the too-large case under ./gradcheck-cases

    assert cases_text(1) == "1 case" and cases_text(2) == "2 cases"
    every_case_fails = invoke("explain", "fx_big.dx[reference]", "-m", LARGE, "--examples", "5")
    assert "Verdict: fail over 1 case (NOT as expected)" in every_case_fails.stdout


def test_mypy_sees_check_vjps_signature(tmp_path):
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text("import gradcheck\ngradcheck.check_vjp(1, 2)\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", str(probe)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert 'Argument 1 to "check_vjp" has incompatible type "int"' in done.stdout, done.stdout


# ------------------------------------------------------------- README

def _python_blocks() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    return [(m.group(1) or "", m.group(2)) for m in
            re.finditer(r"(?:<!-- ([a-z-]+) -->\s*)?```python\n(.*?)```", readme, re.S)]


def test_the_readme_has_python_blocks_to_run():
    assert len(_python_blocks()) >= 2


@pytest.mark.parametrize("code", [c for _, c in _python_blocks()],
                         ids=[f"block{i}" for i in range(len(_python_blocks()))])
def test_readme_python_block_runs(code, tmp_path, monkeypatch):
    for name in set(re.findall(r"^import (torch|jax)\b", code, re.M)):
        pytest.importorskip(name)  # the adapters' examples need their extra (CI has both)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102


def test_readme_declaration_example_is_a_complete_module(tmp_path, monkeypatch):
    (code,) = [c for name, c in _python_blocks() if name == "declaration-example"]
    assert "batched=True" not in code  # the recipe starts from batched=False
    (tmp_path / "mine.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    result = invoke("check", "--module", "mine.py", "--examples", "20")
    assert result.exit_code == 0, result.output
    assert "my_linear.dx[einsum]" in result.stdout and "fail    ok" in result.stdout


@pytest.mark.parametrize("option", ["--gradcheck-seed=0", "--gradcheck-timeout=5",
                                    "--gradcheck-report-only"])
def test_every_gradcheck_option_without_the_flag_warns(pytester: pytest.Pytester, option):
    """A falsy value (seed 0) and the options added later (timeout, report-only) were not
    warned about: the check read truthiness over a list that had not grown with them."""
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(option)
    assert f"{option.split('=')[0]} given without --gradcheck" in result.stdout.str()
