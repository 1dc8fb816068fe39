"""The pytest plugin: ``pytest --gradcheck`` makes every formula a test item.

Inert unless ``--gradcheck`` is given; importing it loads nothing but pytest. Formula
modules (the ``derivations/`` folder of the rootdir by default, or ``--gradcheck-module`` /
the ini option ``gradcheck_modules``) are collected as files whose items are formulas, in
sorted order. Per-item figures travel on ``item.user_properties`` as plain types, so the
summary and the JSON report are the same under pytest-xdist; state lives in config.stash.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from gradcheck import settings

RESULT_KEY = "gradcheck_result"
results_key = pytest.StashKey[dict[str, dict[str, Any]]]()
modules_key = pytest.StashKey[set[Path]]()
sigterm_key = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks of hand-derived formulas")
    group.addoption("--gradcheck", action="store_true", default=False,
                    help="Collect and check the formulas of the gradcheck modules.")
    group.addoption("--gradcheck-module", action="append", default=[], metavar="NAME_OR_PATH",
                    help="A formula module to check (repeatable); default: ./derivations.")
    group.addoption("--gradcheck-examples", type=int, default=None, metavar="N",
                    help=f"{settings.HELP['examples']} (default {settings.EXAMPLES}).")
    group.addoption("--gradcheck-seed", type=int, default=None, metavar="S",
                    help=f"{settings.HELP['seed']} (default {settings.SEED}).")
    group.addoption("--gradcheck-mode", choices=settings.MODES, default=None,
                    help=f"{settings.HELP['mode']} (default {settings.MODE}).")
    group.addoption("--gradcheck-report", default=None, metavar="FILE",
                    help="Write the JSON report (schema gradcheck-report/1) here.")
    group.addoption("--gradcheck-html", default=None, metavar="FILE",
                    help="Write the self-contained HTML report here (plots need matplotlib).")
    parser.addini("gradcheck_modules", type="linelist", default=[],
                  help="Formula modules to check, by dotted name or path.")
    parser.addini("gradcheck_examples", type="int", default=settings.EXAMPLES,
                  help=settings.HELP["examples"])
    parser.addini("gradcheck_seed", type="int", default=settings.SEED, help=settings.HELP["seed"])
    parser.addini("gradcheck_mode", type="string", default=settings.MODE,
                  help=f"{settings.HELP['mode']}: {', '.join(settings.MODES)}.")


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"gradcheck_{name}")
    return config.getini(f"gradcheck_{name}") if value is None else value


def _settings(config: pytest.Config) -> settings.Settings:
    return settings.Settings(examples=_setting(config, "examples"),
                             seed=_setting(config, "seed"), mode=_setting(config, "mode"))


def _module_path(spec: str, root: Path) -> Path:
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        return (path if path.is_absolute() else root / path).resolve()
    found = importlib.util.find_spec(spec)
    if found is None or not found.origin:
        raise pytest.UsageError(f"--gradcheck-module: cannot find module {spec!r}")
    return Path(found.origin).resolve()


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("gradcheck"):
        return
    config.addinivalue_line("markers", "gradcheck: a gradcheck formula item")
    root = config.rootpath
    specs = config.getoption("gradcheck_module") or config.getini("gradcheck_modules")
    if specs:
        paths = {_module_path(s, root) for s in specs}
    else:
        paths = {p.resolve() for p in sorted((root / "derivations").glob("*.py"))
                 if p.name != "__init__.py"}
        if not paths:
            raise pytest.UsageError(
                f"--gradcheck: no formula modules: {root / 'derivations'} has no .py files; "
                "give --gradcheck-module or the ini option gradcheck_modules")
    for p in paths:
        if not p.is_file():
            raise pytest.UsageError(f"--gradcheck-module: no such file {p}")
    try:  # a bad ini value or option is a usage error now, not a failure in every item
        _settings(config)
    except ValueError as exc:
        raise pytest.UsageError(f"gradcheck: {exc}") from exc
    from gradcheck.report import unwritable

    for option in ("gradcheck_report", "gradcheck_html"):
        target = config.getoption(option)
        problem = target and unwritable(target)
        if problem:
            raise pytest.UsageError(f"--{option.replace('_', '-')}: {problem}")
    if not hasattr(config, "workerinput"):  # SIGTERM ends the run like Ctrl-C: reports kept
        config.stash[sigterm_key] = settings.end_on_sigterm()
    config.stash[modules_key] = paths
    config.stash[results_key] = {}
    config.pluginmanager.register(Collector(config), "gradcheck-collector")
    named = [(config.invocation_params.dir / a.split("::")[0]).resolve() for a in config.args]
    if not any(p in named for p in paths):  # no formula module named: check them all
        config.args.extend(
            str(p) for p in sorted(paths) if not any(d in p.parents for d in named)
        )


def _ours(path: Path, parent: pytest.Collector) -> bool:
    paths = parent.config.stash.get(modules_key, None)
    return bool(paths) and path.resolve() in paths  # type: ignore[operator]


def pytest_unconfigure(config: pytest.Config) -> None:
    if sigterm_key in config.stash:
        import signal

        signal.signal(signal.SIGTERM, config.stash[sigterm_key])


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    """A formula module named on the command line (an initial path)."""
    return FormulaFile.from_parent(parent, path=module_path) if _ours(module_path, parent) else None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    """A formula module met while walking a directory."""
    if _ours(file_path, parent) and not parent.session.isinitpath(file_path):
        return FormulaFile.from_parent(parent, path=file_path)
    return None


class FormulaFile(pytest.File):
    """A module of derivations; its items are the formulas, sorted by id."""

    def collect(self):  # type: ignore[no-untyped-def]
        from gradcheck.declare import load_derivations
        from gradcheck.errors import LoadError

        try:
            derivations = load_derivations(str(self.path))
        except LoadError as exc:
            raise self.CollectError(str(exc)) from exc
        formulas = sorted((f for d in derivations for f in d.formulas), key=lambda f: f.id)
        for f in formulas:
            item = FormulaItem.from_parent(self, name=f.id, formula=f)
            item.add_marker(pytest.mark.gradcheck)
            if f.expect == "fail":
                from gradcheck.errors import GradientMismatch

                item.add_marker(pytest.mark.xfail(
                    strict=True, raises=GradientMismatch,
                    reason=f"{f.id} is a known-wrong formula (expect='fail')"))
            yield item


class FormulaFailure(Exception):
    """The formula's outcome differs from its expectation (shown without a traceback)."""


class FormulaItem(pytest.Item):
    def __init__(self, *, formula: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.formula = formula

    def runtest(self) -> None:
        from gradcheck.errors import GradientMismatch
        from gradcheck.runner import run_formula

        r = run_formula(self.formula, _settings(self.config))
        record = r.to_dict()
        self.user_properties += [(k, record[k]) for k in (
            "status", "expect", "cases", "max_rel_error", "median_rel_error")]
        self.user_properties.append((RESULT_KEY, json.dumps(record)))
        detail = r.failing_result.explain() if r.failing_result is not None else r.message
        if r.status == "error":
            raise FormulaFailure(f"{r.id}: error\n{detail}")
        if r.expect == "fail" and r.status in ("fail", "pass"):  # strict xfail decides
            if r.status == "fail":
                raise GradientMismatch(f"{r.id} fails, as expected:\n{detail}")
            return
        if not r.matches_expectation:
            what = f"{r.id}: expected {r.expect}, got {r.status} over {r.cases} cases"
            raise FormulaFailure(what + (f"\n{detail}" if detail else ""))

    def repr_failure(self, excinfo, style=None):  # type: ignore[no-untyped-def]
        from gradcheck.errors import GradientMismatch

        if isinstance(excinfo.value, (FormulaFailure, GradientMismatch)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, f"gradcheck {self.name}"


class Collector:
    """Registered only with --gradcheck: gathers per-formula records, prints, reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == RESULT_KEY:
                record = json.loads(str(value))
                self.config.stash[results_key][record["id"]] = record

    def run(self) -> Any:
        from dataclasses import fields

        from gradcheck.runall import Run
        from gradcheck.runner import FormulaResult

        names = {f.name for f in fields(FormulaResult) if f.init}
        records = self.config.stash[results_key]
        results = [FormulaResult(**{k: v for k, v in records[i].items() if k in names})
                   for i in sorted(records)]
        return Run(_settings(self.config), results, seconds=sum(r.seconds for r in results))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.config.stash[results_key]:
            return
        from gradcheck.report import render_table

        terminalreporter.write_sep("=", "gradcheck: per-formula summary")
        terminalreporter.write(render_table(self.run()))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        json_target = self.config.getoption("gradcheck_report")
        html_target = self.config.getoption("gradcheck_html")
        if not (json_target or html_target) or hasattr(self.config, "workerinput"):
            return
        from gradcheck.report import render_html, render_json, write_atomic

        run = self.run()
        run.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(
            session.shouldstop)
        for target, render in ((json_target, render_json), (html_target, render_html)):
            if not target:
                continue
            try:
                write_atomic(target, render(run))
            except OSError as exc:  # say so plainly; the summary table is already printed
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"gradcheck: could not write {target}: {exc}", red=True)
