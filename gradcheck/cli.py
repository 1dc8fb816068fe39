"""gradcheck's command line: list, check, explain and sweep hand-derived gradient formulas.

Run as ``gradcheck ...`` or ``python -m gradcheck ...`` once installed, or from a checkout
as ``python cli.py ...``. The built-in catalogue is every module in the checkout's
``derivations/`` (outside a checkout: ``./derivations`` if present); ``--module
NAME_OR_PATH`` adds your own (loading a module runs its code).

A PATTERN selects formulas by id: the exact id, a glob (``*`` and ``?``; brackets are
literal, as in ``linear.d*[reference]``), or otherwise a substring (``maxpool``).

Exit codes: 0 every formula's outcome matches its expectation (or ``check
--report-only``: whatever the outcomes); 1 one does not; 2 usage error (unknown formula,
module that does not load, bad option, unwritable --output); 3 internal error; 130
interrupted (the report then holds the formulas finished so far).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from gradcheck import settings

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


CATALOGUE: dict[str, Path] = {}  # "root": the folder holding derivations/; cwd if unset


def use_catalogue(root: Path) -> None:
    """Take the built-in catalogue from ``root/derivations`` (the checkout's cli.py does)."""
    CATALOGUE["root"] = root


def builtin_modules() -> list[str]:
    root = CATALOGUE.get("root", Path.cwd())
    if str(root) not in sys.path:  # the catalogue's modules are imported as derivations.*
        sys.path.insert(0, str(root))
    return sorted(f"derivations.{p.stem}" for p in (root / "derivations").glob("*.py")
                  if p.stem != "__init__")


def matches(pattern: str, fid: str) -> bool:
    """Exact id, glob with ``*``/``?`` (brackets literal), or substring."""
    if pattern == fid:
        return True
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(fid, pattern.replace("[", "[[]"))
    return pattern in fid


def suggestions(pattern: str, formulas: list[Any]) -> list[str]:
    """Close names for an unknown pattern: ids, ``name.dwrt`` and derivation names."""
    names = sorted({f.id for f in formulas} | {f"{f.derivation.name}.d{f.wrt}" for f in formulas}
                   | {f.derivation.name for f in formulas})
    folded = [n for n in names if pattern.lower() in n.lower()]
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
    close += difflib.get_close_matches(pattern.lower(), [n.lower() for n in names], n=3,
                                       cutoff=0.6)
    shown: list[str] = []
    for name in folded + close:
        real = next(n for n in names if n.lower() == name.lower())
        if real not in shown:
            shown.append(real)
    return shown[:3]


def select(modules: list[str], patterns: tuple[str, ...]) -> list[Any]:
    """The formulas of ``modules`` whose ids match any pattern, sorted by id."""
    from gradcheck.declare import collect_formulas
    from gradcheck.errors import LoadError

    try:
        formulas = collect_formulas(modules)
    except LoadError as exc:
        raise click.UsageError(str(exc)) from exc
    if not formulas:
        raise click.UsageError(f"no formulas found in {', '.join(modules)}: their derivations "
                               "register none")
    chosen: dict[str, Any] = {}
    for pattern in patterns:
        hits = [f for f in formulas if matches(pattern, f.id)]
        if not hits:
            close = suggestions(pattern, formulas)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                "; the list command shows them all"
            raise click.UsageError(f"no formula matches {pattern!r}{hint}")
        chosen.update((f.id, f) for f in hits)
    return formulas if not patterns else [chosen[k] for k in sorted(chosen)]


def module_options(fn: Any) -> Any:
    fn = click.option("--module", "-m", "modules", multiple=True, metavar="NAME_OR_PATH",
                      help="Check the formulas of this module (repeatable): a dotted name, "
                      "found from the current directory then sys.path, or a .py path relative "
                      "to the current directory.")(fn)
    return click.option("--builtin/--no-builtin", default=None,
                        help="Add the built-in catalogue (derivations/) to the modules given "
                        "(without --module it is checked alone).")(fn)


def modules_of(builtin: bool | None, modules: tuple[str, ...]) -> list[str]:
    """The modules named; the built-in catalogue instead when none is, or with --builtin;
    each module file once, however it is spelled."""
    from gradcheck.declare import unique

    if builtin is None:
        builtin = not modules
    catalogue = builtin_modules() if builtin else []
    if builtin and not catalogue:
        where = CATALOGUE.get("root", Path.cwd()) / "derivations"
        raise click.UsageError(f"no built-in catalogue: {str(where)!r} has no modules; give "
                               "--module NAME_OR_PATH")
    chosen = list(unique(catalogue + list(modules), strict=False).values())
    if not chosen:
        raise click.UsageError("no modules to load: give --module or drop --no-builtin")
    return chosen


def time_limit(ctx: click.Context, param: click.Parameter, value: float) -> float | None:
    try:
        return settings.time_limit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def run_options(fn: Any) -> Any:
    for decorator in reversed([
        click.option("--examples", type=click.IntRange(min=1), default=settings.EXAMPLES,
                     show_default=True, help=settings.HELP["examples"]),
        click.option("--seed", type=click.IntRange(min=0), default=settings.SEED,
                     show_default=True, help=settings.HELP["seed"]),
        click.option("--mode", type=click.Choice(settings.MODES), default=settings.MODE,
                     show_default=True, help=settings.HELP["mode"]),
        click.option("--dtype", type=click.Choice(settings.DTYPES), default=settings.DTYPE,
                     show_default=True, help=settings.HELP["dtype"]),
        click.option("--timeout", type=float, default=settings.TIMEOUT, show_default=True,
                     metavar="SECONDS", callback=time_limit, help=settings.HELP["timeout"]),
    ]):
        fn = decorator(fn)
    return fn


def writable_output(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    """Check --output before the run: its folder exists and a file can be created there."""
    from gradcheck.report import unwritable

    if value is None or str(value) == "-":
        return None  # stdout
    problem = unwritable(value)
    if problem:
        raise click.BadParameter(problem, ctx, param)
    return Path(os.path.abspath(value))  # now: a module that changes directory cannot move it


class OutputError(click.ClickException):
    exit_code = EXIT_USAGE


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def use_color(stream: Any) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class Cli(click.Group):
    """Click's usage errors exit 2; Ctrl-C exits 130; anything unexpected exits 3."""

    def invoke(self, ctx: click.Context) -> Any:
        old = settings.end_on_sigterm()  # from the start: loading modules can take a while
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("\ngradcheck: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception:
            click.echo("gradcheck: internal error, please report it:\n" + traceback.format_exc(),
                       err=True)
            ctx.exit(EXIT_INTERNAL)
        finally:
            signal.signal(signal.SIGTERM, old)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Check hand-derived gradients against central finite differences."""


@main.command("list")
@click.argument("patterns", nargs=-1)
@module_options
def list_cmd(patterns: tuple[str, ...], builtin: bool | None, modules: tuple[str, ...]) -> None:
    """List the formulas found, with source, variant and expectation."""
    formulas = select(modules_of(builtin, modules), patterns)
    width = max(len(f.id) for f in formulas)
    for f in formulas:
        origin = f.source or f.derivation.module
        click.echo(f"{f.id:<{width}}  {f.variant:<10}  expect {f.expect:<9}  {origin}")


def _progress(fid: str, done: int, total: int) -> None:
    width = 20
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    click.echo(f"\r\x1b[2K[{bar}] {done}/{total} {fid}", err=True, nl=False)


def jobs_type(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> int:
    """A count of worker processes, or 'auto' (one per CPU), as pytest-xdist's -n takes."""
    if value in (None, "auto"):
        return os.cpu_count() or 1 if value == "auto" else 1
    try:
        jobs = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a count >= 1 or 'auto', got {value!r}") from None
    if jobs < 1:
        raise click.BadParameter(f"expected a count >= 1 or 'auto', got {value!r}")
    return jobs


@main.command()
@click.argument("patterns", nargs=-1)
@run_options
@click.option("--format", "fmt",
              type=click.Choice(["table", "json", "markdown", "junit", "html"]),
              default="table", show_default=True,
              help="Report format (html: self-contained page with plots; needs matplotlib).")
@click.option("--output", "-o", type=click.Path(path_type=Path), callback=writable_output,
              default=None, help="Write the report here (atomically); '-' or none: stdout. "
              "Counterexamples too large to inline go to .npz files in FILE.cases/.")
@click.option("--jobs", "-j", "-n", default="1", callback=jobs_type, metavar="N|auto",
              show_default=True, help="Worker processes (-n as in pytest-xdist).")
@click.option("--report-only", is_flag=True, default=settings.REPORT_ONLY,
              help=settings.HELP["report_only"] + " Exit 0 once the report is written.")
@module_options
def check(patterns: tuple[str, ...], examples: int, seed: int, mode: str, dtype: str,
          timeout: float | None, fmt: str, output: Path | None, jobs: int, report_only: bool,
          builtin: bool | None, modules: tuple[str, ...]) -> None:
    """Check formulas over property-generated cases and report per formula."""
    from gradcheck.repro import save_large
    from gradcheck.runall import run_all

    jobs = capped_jobs(jobs)
    with contextlib.redirect_stdout(sys.stderr):  # a module that prints as it loads: not
        formulas = select(modules_of(builtin, modules), patterns)  # into a report on stdout
    show = stderr_is_tty()
    run = run_all(formulas, settings.Settings(examples=examples, seed=seed, mode=mode,
                                              dtype=dtype),
                  _progress if show else None, jobs=jobs, timeout=timeout)
    if show:
        click.echo("\r\x1b[2K", err=True, nl=False)
    base = Path.cwd() if output is None else output.parent
    folder = Path("gradcheck-cases") if output is None else Path(f"{output.name}.cases")
    # JSON (read back by `explain --case`) records paths relative to its own folder; stdout
    # and the other formats, read by people and snippets run anywhere, absolute ones
    absolute = output is None or fmt != "json"
    for saved in save_large(run.results, base, folder, absolute=absolute):
        click.echo(f"counterexample too large to inline saved to {saved}", err=True)
    deliver(run, fmt, output)
    if run.interrupted:
        click.echo("interrupted: the report holds the formulas finished so far", err=True)
        sys.exit(EXIT_INTERRUPTED)
    broken = [r.id for r in run.results if r.internal]
    if broken:
        click.echo(f"gradcheck: internal error (a bug in gradcheck, please report it) while "
                   f"checking {', '.join(broken)}; see the report", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(EXIT_OK if run.ok or report_only else EXIT_MISMATCH)


def capped_jobs(jobs: int) -> int:
    """More workers than CPUs only slows every one of them down: capped, with a warning."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = max(1, cpus or 1)
    if jobs > cpus:
        click.echo(f"gradcheck: --jobs {jobs} is more than the {cpus} CPUs available to this "
                   f"process; using {cpus}", err=True)
    return min(jobs, cpus)


def render(run: Any, fmt: str, output: Path | None, plots: bool = True) -> str:
    from gradcheck.report import RENDERERS, render_html, render_table

    if fmt == "table":
        return render_table(run, color=output is None and use_color(sys.stdout))
    if fmt == "html":
        return render_html(run, plots=plots)
    return RENDERERS[fmt](run)  # type: ignore[no-any-return]


def deliver(run: Any, fmt: str, output: Path | None) -> None:
    """Render the report and write it. An interrupt while rendering (HTML takes ~0.3 s a
    formula) leaves a valid report of the finished formulas all the same: rendered again
    the cheap way (HTML without plots), marked interrupted, with Ctrl-C and SIGTERM held
    until it is written; a held signal then ends the program (exit 130)."""
    try:
        text = render(run, fmt, output)
    except KeyboardInterrupt:
        run.interrupted = True
        with settings.signals_held():
            write(render(run, fmt, output, plots=False), output)
        return
    with settings.signals_held():
        write(text, output)


def write(text: str, output: Path | None) -> None:
    from gradcheck.report import write_atomic

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)
    except OSError as exc:
        raise OutputError(f"could not write the report to {str(output)!r}: "
                          f"{exc.strerror or exc}") from exc
    click.echo(f"report written to {output}", err=True)


def isolated(f: Any, examples: int, seed: int, mode: str, dtype: str,
             timeout: float | None) -> Any:
    """One formula's result, checked in a worker process (gradcheck.isolate)."""
    from gradcheck.isolate import run_isolated

    (result,) = run_isolated([f], settings.Settings(examples=examples, seed=seed, mode=mode,
                                                    dtype=dtype), timeout=timeout)
    return result


def one_formula(formula: str, builtin: bool | None, modules: tuple[str, ...]) -> Any:
    found = select(modules_of(builtin, modules), (formula,))
    exact = [f for f in found if f.id == formula]
    if len(found) > 1 and not exact:
        raise click.UsageError(f"{formula!r} matches {len(found)} formulas: "
                               + ", ".join(f.id for f in found) + "; give one id")
    return (exact or found)[0]


@main.command()
@click.argument("formula")
@run_options
@click.option("--case", "case_file", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              help="Check again exactly this counterexample (an .npz gradcheck wrote, or a "
              "JSON report holding one), with the seed, mode and dtype it was found with.")
@click.option("--save-case", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the counterexample found to this .npz (for --case).")
@module_options
def explain(formula: str, examples: int, seed: int, mode: str, dtype: str,
            timeout: float | None,
            case_file: Path | None, save_case: Path | None, builtin: bool | None,
            modules: tuple[str, ...]) -> None:
    """Show a formula, a fresh verdict, its minimal counterexample and where it is wrong."""
    from gradcheck import repro
    from gradcheck.compare import RULE
    from gradcheck.report import cases_text, error_grid

    f = one_formula(formula, builtin, modules)
    click.echo(f"{f.id}   ({f.source or f.derivation.module}; variant {f.variant}, "
               f"expect {f.expect})")
    if f.text:
        click.echo(f"  {f.text}")
    if f.derivation.runs_on:
        click.echo(f"  ran on {f.derivation.runs_on}")
    if case_file is not None:
        sys.exit(recheck(f, case_file, explicit_run_options()))
    r = isolated(f, examples, seed, mode, dtype, timeout)
    worst = "-" if r.max_rel_error is None else f"{r.max_rel_error:.3g}"
    click.echo(f"\nVerdict: {r.status} over {cases_text(r.cases)} "
               f"({'as expected' if r.matches_expectation else 'NOT as expected'}), checked in "
               f"{r.dtype}; max relative error {worst} (over those cases)")
    if r.coverage:
        click.echo("Coverage: " + ", ".join(f"{k} {v}" for k, v in r.coverage.items()))
    if r.message and (r.failing_result is None or r.message not in r.failing_result.message):
        click.echo("\n" + r.message)
    if r.failing_result is not None and r.failing_case is not None:
        title = "Minimal counterexample" if r.status in ("fail", "error") else "Case at a kink"
        click.echo(f"\n{title} (its own error, after shrinking, may differ from the maximum "
                   f"above):\n" + r.failing_result.explain(criterion=False))
        if r.failing_result.status != "error":
            click.echo("\n" + error_grid(r.failing_result))
        c = r.counterexample or {}
        meta = {k: c.get(k) for k in ("wrt", "seed", "mode", "dtype", "module")}
        meta["id"] = f.id
        click.echo("\nValues:\n" + repro.printout(r.failing_case, r.failing_result.upstream))
        if save_case is None and repro.too_large(r.failing_case, r.failing_result.upstream):
            save_case = Path("gradcheck-cases", repro.file_name(f.id)).resolve()
        if save_case is not None:
            repro.save_case(save_case, meta, r.failing_case, r.failing_result.upstream)
            where = " ".join([*(["--builtin"] if builtin else []),
                              *(f"--module {shlex.quote(m)}" for m in modules)])
            click.echo(f"\nSaved to {save_case}; check it again with: explain "
                       f"{shlex.quote(f.id)} {where + ' ' if where else ''}--case "
                       f"{shlex.quote(str(save_case))}")
        click.echo("\nReproduce:\n" + repro.snippet(meta, r.failing_case,
                                                      r.failing_result.upstream,
                                                      str(save_case) if save_case else None))
        if r.failing_result.status != "error":
            click.echo(f"\nCriterion: {RULE}")
    sys.exit(EXIT_INTERNAL if r.internal else EXIT_OK if r.matches_expectation else EXIT_MISMATCH)


def explicit_run_options() -> dict[str, Any]:
    """The run options given on the command line (not left at their defaults)."""
    ctx = click.get_current_context()
    return {k: ctx.params[k] for k in ("examples", "seed", "mode", "dtype")
            if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}


def recheck(f: Any, case_file: Path, given: dict[str, Any] | None = None) -> int:
    """Check the formula on the case saved in ``case_file``; the exit code. ``given``
    (--seed, --mode, --dtype typed with --case) replaces what the case was found with."""
    import numpy as np

    from gradcheck.check import check_vjp
    from gradcheck.errors import InvalidCase
    from gradcheck.repro import load_case, printout

    try:
        meta, case, upstream = load_case(case_file, f.id)
    except (OSError, ValueError, KeyError) as exc:
        raise click.BadParameter(f"cannot read a case from {str(case_file)!r}: {exc}",
                                 param_hint="--case") from exc
    wrt = meta.get("wrt") or f.wrt
    if wrt != f.wrt:
        raise click.BadParameter(f"{str(case_file)!r} holds a case for the gradient in "
                                 f"{wrt!r}; {f.id} is the gradient in {f.wrt!r}",
                                 param_hint="--case")
    given = dict(given or {})
    if "examples" in given:
        raise click.BadParameter("--case checks one saved case; --examples does not apply",
                                 param_hint="--examples")
    options = {"seed": int(meta.get("seed") or 0), "mode": meta.get("mode") or "auto",
               "dtype": meta.get("dtype") or "float64", "batched": f.derivation.batched}
    options.update(given)
    try:  # the seed draws the saved upstream gradient again, and the same directions after it
        result = check_vjp(f.derivation.forward, f.vjp, case, f.wrt, **options)
        if upstream is not None and (result.upstream is None or
                                     not np.array_equal(result.upstream, upstream)):
            result = check_vjp(f.derivation.forward, f.vjp, case, f.wrt, upstream=upstream,
                               **options)  # an edited upstream gradient: use it as given
    except InvalidCase as exc:
        raise click.BadParameter(f"the case in {str(case_file)!r} does not fit {f.id}: {exc}",
                                 param_hint="--case") from exc
    how = ", ".join(f"{k} {v}" for k, v in given.items() if k != "examples")
    whose = "" if meta.get("id") in (None, f.id) else f", saved for {meta['id']}"
    click.echo(f"\nThe case in {case_file}{whose} ({how or 'its seed, mode and dtype'}):\n"
               f"{result.explain()}")
    click.echo("\nValues:\n" + printout(case, upstream))
    return EXIT_OK if result.status == f.expect else EXIT_MISMATCH


@main.command()
@click.argument("formula")
@run_options
@module_options
def sweep(formula: str, examples: int, seed: int, mode: str, dtype: str,
          timeout: float | None,
          builtin: bool | None, modules: tuple[str, ...]) -> None:
    """Print the error of a central difference against the step h, for one case."""
    from gradcheck.sweep import sweep_table

    f = one_formula(formula, builtin, modules)
    r = isolated(f, examples, seed, mode, dtype, timeout)
    if r.sweep is None:
        raise click.ClickException(f"{f.id}: no case to sweep ({r.status}: {r.message})")
    which = "the minimal counterexample" if r.failing_case is not None else "the last case"
    click.echo(f"{f.id}: step-size curve along a random direction, on {which}")
    click.echo(sweep_table(r.sweep))


if __name__ == "__main__":
    main()
