"""The HTML report and the step-size sweep."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gradcheck.html
from gradcheck import cli
from gradcheck.declare import collect_formulas
from gradcheck.report import render_html
from gradcheck.runall import run_all
from gradcheck.runner import Settings
from gradcheck.sweep import step_sweep, sweep_table

VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}


class TagChecker(HTMLParser):
    """Every opened element is closed in order (SVG's self-closing tags included)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def well_formed(page: str) -> list[str]:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    return checker.problems + [f"<{t}> never closed" for t in checker.stack]


def external_references(page: str) -> list[str]:
    """src/href/url() pointing off the page (xmlns declarations are names, not fetches)."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)[^"'\s>]*|url\(\s*["']?"""
                      r"""(?:https?:|//)[^)]*""", page)


@pytest.fixture(scope="module")
def run():
    formulas = collect_formulas(["tests/fixtures/good.py"])
    return run_all(formulas, Settings(examples=20))


def test_page_is_well_formed_and_self_contained(run):
    page = render_html(run)
    assert well_formed(page) == []
    assert external_references(page) == []
    assert "<script" not in page
    for r in run.results:
        assert f"id='{r.id}'" in page
    # a histogram and a step-size curve per formula, a heat map for the failing one
    assert page.count("<svg") == 2 * len(run.results) + 1
    assert "|analytic - numeric|" in page


def test_without_matplotlib_the_tables_stay_and_the_page_says_how(run, monkeypatch):
    monkeypatch.setattr(gradcheck.html, "_pyplot", lambda: None)
    page = render_html(run)
    assert "<svg" not in page and "pip install -e '.[report]'" in page
    assert page.count("<tr>") == len(run.results) + 1 and well_formed(page) == []


@pytest.mark.slow
def test_cli_writes_the_html_report(tmp_path):
    target = tmp_path / "report.html"
    result = CliRunner().invoke(cli.main, ["check", "--no-builtin", "-m",
                                           "tests/fixtures/good.py", "--examples", "10",
                                           "--format", "html", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_plugin_writes_the_html_report(pytester):
    good = pytester.path / "good.py"
    good.write_text((Path(__file__).parent / "fixtures" / "good.py").read_text())
    target = pytester.path / "report.html"
    pytester.runpytest_subprocess("--gradcheck", "--gradcheck-module=good.py",
                                  "--gradcheck-examples=5", f"--gradcheck-html={target}")
    page = target.read_text()
    assert "fx_square.dx[reference]" in page and well_formed(page) == []


def test_sweep_is_a_v_for_a_correct_formula():
    s = step_sweep(lambda x: np.sin(x), lambda dy, x: dy * np.cos(x),
                   {"x": np.linspace(-1, 1, 5)}, "x")
    errors = dict(zip(s["h"], s["error"], strict=True))
    assert s["chosen_error"] < 1e-9
    assert errors[1e-1] > 1e3 * s["chosen_error"]  # truncation on the right
    assert errors[1e-13] > 1e3 * s["chosen_error"]  # rounding on the left


def test_sweep_of_a_wrong_formula_is_flat_at_its_error():
    s = step_sweep(lambda x: np.sin(x), lambda dy, x: -dy * np.cos(x),
                   {"x": np.linspace(-1, 1, 5)}, "x")
    assert np.allclose(s["error"], 2.0, rtol=1e-3)


def test_sweep_command_prints_the_curve_with_the_chosen_step():
    result = CliRunner().invoke(cli.main, ["sweep", "softmax_ce.dy[reference]", "--examples", "5"])
    assert result.exit_code == 0, result.output
    assert "<- chosen step" in result.output and "1.0e-13" in result.output
    assert len(sweep_table({"h": [0.1], "error": [1e-3], "chosen_h": 1e-5,
                            "chosen_error": 1e-10}).splitlines()) == 3


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                    "install chromium); .ci/run installs it")
def test_page_renders_in_headless_chromium(run, tmp_path):
    import matplotlib.image

    page = tmp_path / "report.html"
    page.write_text(render_html(run))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    ink = np.mean(np.any(pixels < 0.9, axis=-1))  # share of pixels that are not white
    assert pixels.std() > 0.05 and ink > 0.02, (pixels.std(), ink)
