"""The pytest plugin: ``pytest --gradcheck`` makes every formula a test item.

Inert unless ``--gradcheck`` is given; importing it loads nothing but pytest. Formula
modules (the ``derivations/`` folder of the rootdir by default, or ``--gradcheck-module`` /
the ini option ``gradcheck_modules``) are collected as files whose items are formulas, in
sorted order. Per-item figures travel on ``item.user_properties`` as plain types, so the
summary and the JSON report are the same under pytest-xdist; state lives in config.stash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gradcheck import settings

RESULT_KEY = "gradcheck_result"
results_key = pytest.StashKey[dict[str, dict[str, Any]]]()
modules_key = pytest.StashKey[dict[Path, str]]()  # module file -> the spec to load it by
sigterm_key = pytest.StashKey[Any]()
kept_key = pytest.StashKey[Any]()  # gradcheck.isolate.Kept: the session's worker processes


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks of hand-derived formulas")
    group.addoption("--gradcheck", action="store_true", default=False,
                    help="Collect and check the formulas of the gradcheck modules.")
    group.addoption("--gradcheck-module", action="append", default=[], metavar="NAME_OR_PATH",
                    help="A formula module to check (repeatable): a dotted name, found from the "
                    "current directory then sys.path, or a .py path relative to the current "
                    "directory; default: the rootdir's derivations/.")
    group.addoption("--gradcheck-examples", type=int, default=None, metavar="N",
                    help=f"{settings.HELP['examples']} (default {settings.EXAMPLES}).")
    group.addoption("--gradcheck-seed", type=int, default=None, metavar="S",
                    help=f"{settings.HELP['seed']} (default {settings.SEED}).")
    group.addoption("--gradcheck-mode", choices=settings.MODES, default=None,
                    help=f"{settings.HELP['mode']} (default {settings.MODE}).")
    group.addoption("--gradcheck-timeout", type=float, default=None, metavar="SECONDS",
                    help=f"{settings.HELP['timeout']} (default {settings.TIMEOUT:g}).")
    group.addoption("--gradcheck-dtype", choices=settings.DTYPES, default=None,
                    help=f"{settings.HELP['dtype']} (default {settings.DTYPE}).")
    group.addoption("--gradcheck-report", default=None, metavar="FILE",
                    help="Write the JSON report (schema gradcheck-report/1) here.")
    group.addoption("--gradcheck-html", default=None, metavar="FILE",
                    help="Write the self-contained HTML report here (plots need matplotlib).")
    group.addoption("--gradcheck-report-only", action="store_true", default=None,
                    help=f"{settings.HELP['report_only']} The items pass; the summary table "
                         "and reports say what each formula did.")
    parser.addini("gradcheck_modules", type="linelist", default=[],
                  help="Formula modules to check, by dotted name or by path relative to the "
                  "ini file's folder.")
    parser.addini("gradcheck_examples", type="int", default=settings.EXAMPLES,
                  help=settings.HELP["examples"])
    parser.addini("gradcheck_seed", type="int", default=settings.SEED, help=settings.HELP["seed"])
    parser.addini("gradcheck_mode", type="string", default=settings.MODE,
                  help=f"{settings.HELP['mode']}: {', '.join(settings.MODES)}.")
    parser.addini("gradcheck_timeout", type="float", default=settings.TIMEOUT,
                  help=settings.HELP["timeout"])
    parser.addini("gradcheck_report_only", type="bool", default=settings.REPORT_ONLY,
                  help=settings.HELP["report_only"])
    parser.addini("gradcheck_dtype", type="string", default=settings.DTYPE,
                  help=f"{settings.HELP['dtype']}: {', '.join(settings.DTYPES)}.")


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"gradcheck_{name}")
    return config.getini(f"gradcheck_{name}") if value is None else value


def _settings(config: pytest.Config) -> settings.Settings:
    return settings.Settings(examples=_setting(config, "examples"),
                             seed=_setting(config, "seed"), mode=_setting(config, "mode"),
                             dtype=_setting(config, "dtype"))


def _modules(config: pytest.Config) -> dict[Path, str]:
    """Each module's file and the spec it loads by: the CLI's rule (gradcheck.declare): a
    dotted name from the current directory then sys.path, keeping its package; a path
    relative to the current directory (in the ini file: to the ini file's folder)."""
    from gradcheck.declare import is_path, unique
    from gradcheck.errors import LoadError

    given = config.getoption("gradcheck_module")
    specs = given or config.getini("gradcheck_modules")
    if not specs:
        root = config.rootpath / "derivations"
        found = {p.resolve(): str(p.resolve()) for p in sorted(root.glob("*.py"))
                 if p.name != "__init__.py"}
        if not found:
            raise pytest.UsageError(
                f"--gradcheck: no formula modules: {root} has no .py files; "
                "give --gradcheck-module or the ini option gradcheck_modules")
        return found
    import sys

    ini = None if given else config.inipath
    from_ini = ini is not None
    base = config.invocation_params.dir if ini is None else ini.parent
    if from_ini and not all(map(is_path, specs)) and str(base) not in sys.path:
        sys.path.insert(0, str(base))  # the ini's dotted names, from the ini's folder
    specs = [str((base / s).resolve()) if is_path(s) else s for s in specs]
    try:
        return unique(specs)
    except LoadError as exc:
        where = "the ini option gradcheck_modules" if from_ini else "--gradcheck-module"
        raise pytest.UsageError(f"{where}: {exc}") from exc


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("gradcheck"):
        unused = [f"--gradcheck-{name.replace('_', '-')}"
                  for name in ("module", "examples", "seed", "mode", "timeout", "dtype",
                               "report", "html", "report_only")
                  if config.getoption(f"gradcheck_{name}") not in (None, [])]  # 0 is given
        if unused:
            config.issue_config_time_warning(pytest.PytestConfigWarning(
                f"{', '.join(unused)} given without --gradcheck: no formulas are checked; "
                "add --gradcheck"), stacklevel=2)
        return
    config.addinivalue_line("markers", "gradcheck: a gradcheck formula item")
    specs = _modules(config)
    paths = set(specs)
    try:  # a bad ini value or option is a usage error now, not a failure in every item
        _settings(config)
    except ValueError as exc:
        raise pytest.UsageError(f"gradcheck: {exc}") from exc
    try:
        settings.time_limit(_setting(config, "timeout"))
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
    config.stash[modules_key] = specs
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
    if kept_key in config.stash:
        config.stash[kept_key].close()
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


def _save_large(config: pytest.Config, r: Any) -> str | None:
    """A counterexample too large for the report goes to an .npz: beside the JSON report
    (REPORT.cases/, recorded relative to it), else in gradcheck-cases/ of the current
    directory (recorded absolute). Its absolute path, for the failure's snippet."""
    from gradcheck.repro import save_large

    report = config.getoption("gradcheck_report")
    if report:
        base, folder = Path(report).resolve().parent, Path(f"{Path(report).name}.cases")
    else:
        base, folder = config.invocation_params.dir, Path("gradcheck-cases")
    saved = save_large([r], base, folder, absolute=not report)
    return str(saved[0].resolve()) if saved else None


class FormulaFile(pytest.File):
    """A module of derivations; its items are the formulas, sorted by id."""

    def collect(self):  # type: ignore[no-untyped-def]
        from gradcheck.declare import load_derivations
        from gradcheck.errors import LoadError

        spec = self.config.stash[modules_key].get(self.path.resolve(), str(self.path))
        try:
            derivations = load_derivations(spec)
        except LoadError as exc:
            raise self.CollectError(str(exc)) from exc
        formulas = sorted((f for d in derivations for f in d.formulas), key=lambda f: f.id)
        report_only = _setting(self.config, "report_only")
        for f in formulas:
            item = FormulaItem.from_parent(self, name=f.id, formula=f)
            item.add_marker(pytest.mark.gradcheck)
            if f.expect == "fail" and not report_only:
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
        from gradcheck.isolate import Kept, run_isolated

        # in a worker process: a formula that ends its process or hangs is this item's error
        limit = settings.time_limit(_setting(self.config, "timeout"))
        kept = self.config.stash.get(kept_key, None)
        if kept is None:  # workers forked once, knowing every formula of the session
            kept = self.config.stash[kept_key] = Kept(
                [i.formula for i in self.session.items if isinstance(i, FormulaItem)])
        (r,) = run_isolated([self.formula], _settings(self.config), timeout=limit, kept=kept)
        case_file = _save_large(self.config, r)
        record = r.to_dict()
        self.user_properties += [(k, record[k]) for k in (
            "status", "expect", "cases", "max_rel_error", "median_rel_error")]
        self.user_properties.append((RESULT_KEY, json.dumps(record)))
        if _setting(self.config, "report_only") and not r.internal:
            return  # the summary table and the reports carry the outcome
        if r.failing_result is not None:  # the criterion is printed once, in the summary
            from gradcheck.report import reproduction

            detail = r.failing_result.explain(criterion=False)
            how = reproduction(r, case_file)
            detail += f"\n\n{how}" if how else ""
        else:
            detail = r.message
        if r.status == "error":
            raise FormulaFailure(f"{r.id}: error\n{detail}")
        if r.expect == "fail" and r.status in ("fail", "pass"):  # strict xfail decides
            if r.status == "fail":
                raise GradientMismatch(f"{r.id} fails, as expected:\n{detail}")
            return
        if not r.matches_expectation:
            from gradcheck.report import cases_text

            what = f"{r.id}: expected {r.expect}, got {r.status} over {cases_text(r.cases)}"
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
        from gradcheck.compare import RULE
        from gradcheck.report import render_table

        terminalreporter.write_sep("=", "gradcheck: per-formula summary")
        terminalreporter.write(render_table(self.run()))
        terminalreporter.write_line(f"Criterion: {RULE}")

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
                try:
                    text = render(run)
                except KeyboardInterrupt:  # the finished formulas all the same, the cheap way
                    run.interrupted = True
                    with settings.signals_held():
                        text = render_html(run, plots=False) if render is render_html \
                            else render(run)
                        write_atomic(target, text)
                    raise
                with settings.signals_held():
                    write_atomic(target, text)
            except OSError as exc:  # say so plainly; the summary table is already printed
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"gradcheck: could not write {target}: {exc}", red=True)
