"""Regression tests for the review of issue 14 (each failed before its fix)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradcheck import check_vjp, cli

ROOT = Path(__file__).resolve().parent.parent
LARGE = str(Path(__file__).parent / "fixtures" / "large.py")


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)

# ----------------------------------------------- 1. positional-only callables bind by name

CASE = {"x": np.array([0.3, -1.2]), "w": np.array([2.0, 0.5])}


def _fwd(x, w):
    return x * w**2


def test_positional_only_parameters_are_bound_by_name():
    def right(dy, /, w, x):
        return dy * w**2

    def wrong(dy, /, w, x):
        return dy * x**2

    def right_kwonly(dy, /, *, w, x):
        return dy * w**2

    def right_all_posonly(dy, w, x, /):
        return dy * w**2

    assert check_vjp(_fwd, right, CASE, "x").status == "pass"
    assert check_vjp(_fwd, wrong, CASE, "x").status == "fail"
    assert check_vjp(_fwd, right_kwonly, CASE, "x").status == "pass"
    assert check_vjp(_fwd, right_all_posonly, CASE, "x").status == "pass"
    # the case's key order does not matter
    flipped = {"w": CASE["w"], "x": CASE["x"]}
    assert check_vjp(_fwd, right_all_posonly, flipped, "x").status == "pass"
    assert check_vjp(_fwd, wrong, flipped, "x").status == "fail"


def test_a_ufunc_gets_one_value_by_position_and_several_are_refused_clearly():
    z = {"z": np.array([0.1, 2.0])}
    assert check_vjp(np.tanh, lambda dy, z: dy * (1 - np.tanh(z) ** 2), z, "z").status == "pass"
    r = check_vjp(np.multiply, lambda dy, x, w: dy * w, CASE, "x")
    assert r.status == "error"
    assert "multiply" in r.message and "wrap it" in r.message and "lambda x, w" in r.message


def test_a_positional_only_name_missing_from_the_case_is_named():
    def typo(dy, q, /, x):
        return dy

    r = check_vjp(_fwd, typo, CASE, "x")
    assert r.status == "error"
    assert "positional-only parameter 'q'" in r.message and "typo" in r.message


# ----------------------------------------------- 2. case file names: injective, bounded, checked

def _large_result(fid, module, n=1200):
    from types import SimpleNamespace

    from gradcheck import repro

    x = np.linspace(-1, 1, n)
    case = {"x": x}
    c = {"wrt": "x", "seed": 0, "mode": "exhaustive", "dtype": "float64", "module": module,
         **repro.values(case, x)}
    return SimpleNamespace(id=fid, counterexample=c, failing_case=case,
                           failing_result=SimpleNamespace(upstream=x))


def test_case_file_names_are_distinct_and_bounded(tmp_path):
    from gradcheck.repro import file_name, load_case, save_large

    assert file_name("c.dx[a]") != file_name("c.dx[a_]")
    long_id = "c.dx[" + "v" * 300 + "]"
    assert len(file_name(long_id)) <= 80
    results = [_large_result(i, "m.py") for i in ("c.dx[a]", "c.dx[a_]", long_id)]
    saved = save_large(results, tmp_path, Path("r.json.cases"))
    assert len(set(saved)) == 3 and all(p.is_file() for p in saved)
    report = {"formulas": [{"id": r.id, "counterexample": r.counterexample} for r in results]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    for r in results:
        meta, _, _ = load_case(tmp_path / "r.json", r.id)
        assert meta["id"] == r.id
    # a report whose .npz holds another formula's case is refused, naming both
    report["formulas"][0]["counterexample"]["npz"] = results[1].counterexample["npz"]
    (tmp_path / "r.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"holds the case of 'c\.dx\[a_\]'"):
        load_case(tmp_path / "r.json", "c.dx[a]")


# ----------------------------------------------- 3. batched rounding is not an error

def _cancelling(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(300) * 1e3
    W = rng.standard_normal((5, 300)) * 1e3
    W -= np.outer(W @ x, x) / (x @ x)  # W x cancels to ~1e-9 from terms ~1e6
    return {"W": W, "x": x, "b": np.zeros(5)}


@pytest.mark.parametrize("seed", [4, 6, 9])  # seeds the reviewer found blamed
def test_batched_forward_rounding_differently_is_not_blamed(seed):
    fwd = lambda W, x, b: x @ W.T + b  # noqa: E731
    case = _cancelling(seed)
    good = check_vjp(fwd, lambda dy, W, x, b: W.T @ dy, case, "x", batched=True, seed=seed)
    assert good.status == "pass", good.message
    bad = check_vjp(fwd, lambda dy, W, x, b: 1.5 * W.T @ dy, case, "x", batched=True,
                    seed=seed)
    assert bad.status == "fail", bad.message


def test_forwards_that_do_not_broadcast_are_still_caught():
    from gradcheck.check import batch_claim_broken
    from gradcheck.guard import guard

    case = {"x": np.linspace(-1, 2, 4), "w": np.array([0.5, 1.0, 2.0, 3.0])}
    leak = guard(lambda x, w: w * (x - x.mean(axis=0)), "forward")  # rows leak
    total = guard(lambda x, w: np.atleast_1d(np.sum(w * x)), "forward")  # sums everything
    assert "row 0" in batch_claim_broken(leak, case, "x")
    assert "does not broadcast" in batch_claim_broken(total, case, "x")


# ----------------------------------------------- 4. the README's batched advice runs batched

def _readme_block(name):
    readme = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {name} -->\s*```python\n(.*?)```", readme, re.S)
    assert m, name
    return m.group(1)


def test_readme_batched_example_broadcasts_on_every_argument(tmp_path, monkeypatch):
    from gradcheck.check import batch_claim_broken
    from gradcheck.guard import guard

    code = _readme_block("batched-example")
    assert "batched=True" in code
    (tmp_path / "batchmod.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    result = invoke("check", "--module", "batchmod.py", "--examples", "10")
    assert result.exit_code == 0, result.output
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    fwd = guard(namespace["forward"], "forward")
    case = {"W": np.arange(12.0).reshape(3, 4) / 7, "x": np.linspace(-1, 1, 4),
            "b": np.array([0.1, -0.2, 0.3])}
    assert all(batch_claim_broken(fwd, case, k) == "" for k in case)
    # the advice it replaces was wrong: x @ W.T + b does not broadcast over W
    old = guard(lambda W, x, b: x @ W.T + b, "forward")
    assert "does not broadcast" in batch_claim_broken(old, case, "W")


# ----------------------------------------------- 5, 6. snippets run from anywhere, any size

WRONG_MODULE = '''
import numpy as np
from hypothesis import strategies as st
from gradcheck import Derivation
from gradcheck.strategies import float_arrays

d = Derivation("snip", lambda x: np.sin(x),
               cases=st.fixed_dictionaries({"x": float_arrays((SHAPE,), max_magnitude=3.0)}))
d.formula("x", lambda dy, x: 2 * dy * np.cos(x))
'''


def _snippet(output):
    text = output.split("Reproduce:\n", 1)[1]
    return text.split("\nCriterion:", 1)[0]


@pytest.mark.parametrize("spec", ["snipmod.py", "snipmod"])
def test_the_snippet_runs_from_another_directory(tmp_path, monkeypatch, spec):
    proj, other = tmp_path / "proj", tmp_path / "other"
    proj.mkdir(), other.mkdir()
    (proj / "snipmod.py").write_text(WRONG_MODULE.replace("SHAPE", "3"))
    monkeypatch.chdir(proj)
    out = invoke("explain", "snip.dx[reference]", "--module", spec, "--examples", "5")
    assert out.exit_code == 1, out.output
    snippet = _snippet(out.stdout)
    monkeypatch.chdir(other)
    monkeypatch.delitem(sys.modules, "snipmod", raising=False)  # imported afresh
    namespace: dict = {}
    exec(compile(snippet, "snippet", "exec"), namespace)  # noqa: S102
    assert namespace["r"].status == "fail"


def test_a_200_element_counterexample_is_printed_and_reproducible(tmp_path, monkeypatch):
    (tmp_path / "m200.py").write_text(WRONG_MODULE.replace("SHAPE", "200"))
    monkeypatch.chdir(tmp_path)
    out = invoke("explain", "snip.dx[reference]", "--module", "m200.py", "--examples", "3")
    assert out.exit_code == 1, out.output
    assert "array of shape" not in out.stdout and "CASE.npz" not in out.stdout
    snippet = _snippet(out.stdout)
    namespace: dict = {}
    exec(compile(snippet, "snippet", "exec"), namespace)  # noqa: S102
    assert namespace["r"].status == "fail" and namespace["r"].analytic.shape == (200,)


def test_explain_writes_a_case_too_large_to_print_where_its_snippet_reads_it(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = invoke("explain", "fx_big.dx[reference]", "--module", LARGE, "--examples", "3")
    assert out.exit_code == 1, out.output
    snippet = _snippet(out.stdout)
    assert "CASE.npz" not in snippet and "load_case(" in snippet
    namespace: dict = {}
    exec(compile(snippet, "snippet", "exec"), namespace)  # noqa: S102
    assert namespace["r"].status == "fail"


# ----------------------------------------------- 7. one module named two ways: loaded once

def test_one_module_named_two_ways_is_loaded_once(tmp_path, monkeypatch):
    from gradcheck.declare import collect_formulas

    (tmp_path / "twice.py").write_text(WRONG_MODULE.replace("SHAPE", "3"))
    monkeypatch.chdir(tmp_path)
    for specs in (["twice.py", "./twice.py"], ["twice", "twice.py"],
                  [str(tmp_path / "twice.py"), "twice"]):
        assert [f.id for f in collect_formulas(specs)] == ["snip.dx[reference]"]
    out = invoke("check", "--module", "twice.py", "--module", "./twice.py", "--module", "twice",
                 "--examples", "3")
    assert out.exit_code == 1 and "duplicate" not in out.output, out.output


# ----------------------------------------------- 8. JSON on stdout: case paths that resolve

def test_json_on_stdout_records_absolute_case_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = invoke("check", "--module", LARGE, "--examples", "3", "--format", "json")
    assert out.exit_code == 1, out.output
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.json").write_text(out.stdout)
    c = json.loads(out.stdout)["formulas"][0]["counterexample"]
    assert Path(c["npz"]).is_absolute() and Path(c["npz"]).is_file()
    again = invoke("explain", "fx_big.dx[reference]", "--module", LARGE,
                   "--case", "reports/r.json")
    assert again.exit_code == 1 and "FAIL" in again.stdout, again.output  # a wrong formula


# ----------------------------------------------- 9. smaller points

def test_a_dotted_module_can_import_a_helper_beside_it(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helper_beside.py").write_text(
        "import numpy as np\ndef fwd(x):\n    return np.sin(x)\n")
    (tmp_path / "sub" / "usehelper.py").write_text(
        "from helper_beside import fwd\n"
        + WRONG_MODULE.replace("SHAPE", "3").replace("lambda x: np.sin(x)", "fwd"))
    monkeypatch.chdir(tmp_path)
    out = invoke("check", "--module", "sub.usehelper", "--examples", "3")
    assert out.exit_code == 1 and "snip.dx[reference]" in out.stdout, out.output


def test_explain_case_uses_explicit_options_and_refuses_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m3.py").write_text(WRONG_MODULE.replace("SHAPE", "3"))
    first = invoke("explain", "snip.dx[reference]", "--module", "m3.py", "--examples", "3",
                   "--save-case", "c1.npz")
    assert "explain 'snip.dx[reference]' --module m3.py --case" in first.stdout, first.output
    f32 = invoke("explain", "snip.dx[reference]", "--module", "m3.py", "--case", "c1.npz",
                 "--dtype", "float32")
    assert "dtype float32" in f32.stdout and "float32" in f32.stdout.split("Values:")[0]
    refused = invoke("explain", "snip.dx[reference]", "--module", "m3.py", "--case", "c1.npz",
                     "--examples", "7")
    assert refused.exit_code == 2 and "--examples" in refused.output


def test_ini_module_names_resolve_from_the_ini_folder(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\ngradcheck_modules = ["inimod"]\ngradcheck_examples = 3\n')
    (tmp_path / "inimod.py").write_text(WRONG_MODULE.replace("SHAPE", "3"))
    (tmp_path / "deeper").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "pytest", "--gradcheck", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=tmp_path / "deeper", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "snip.dx[reference]" in done.stdout, done.stdout
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\ngradcheck_modules = ["nosuch"]\n')
    bad = subprocess.run(command, cwd=tmp_path / "deeper", env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 4 and "gradcheck_modules" in bad.stderr + bad.stdout


def test_the_package_ships_py_typed():
    import tomllib

    assert (ROOT / "gradcheck" / "py.typed").is_file()
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setup["package-data"]["gradcheck"]


def test_the_plugins_failure_text_reproduces_a_200_element_case(tmp_path, monkeypatch):
    """The plugin and the Markdown/HTML reports share report.reproduction."""
    from gradcheck import settings
    from gradcheck.declare import collect_formulas
    from gradcheck.report import reproduction
    from gradcheck.runner import run_formula

    (tmp_path / "p200.py").write_text(WRONG_MODULE.replace("SHAPE", "200"))
    monkeypatch.chdir(tmp_path)
    (f,) = collect_formulas(["p200.py"])
    r = run_formula(f, settings.Settings(examples=3, seed=0, mode="auto", dtype="float64"))
    text = reproduction(r)
    assert r.status == "fail" and "array of shape" not in text and "CASE.npz" not in text
    namespace: dict = {}
    exec(compile(text.split("Reproduce:\n", 1)[1], "snippet", "exec"), namespace)  # noqa: S102
    assert namespace["r"].status == "fail"
