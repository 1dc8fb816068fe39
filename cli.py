"""gradcheck's command line: list, check and explain hand-derived gradient formulas.

Run from the checkout as ``python cli.py ...``. The built-in catalogue is every module in
``derivations/``; ``--module NAME_OR_PATH`` adds your own (loading a module runs its code).

Exit codes: 0 every formula's outcome matches its expectation; 1 one does not; 2 usage
error (unknown formula, module that does not load, bad option); 3 internal error.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
import traceback
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def builtin_modules() -> list[str]:
    return sorted(f"derivations.{p.stem}" for p in (HERE / "derivations").glob("*.py")
                  if p.stem != "__init__")


def select(modules: list[str], patterns: tuple[str, ...]) -> list:
    """The formulas of ``modules`` whose ids match any pattern (glob, or substring)."""
    from gradcheck.declare import collect_formulas
    from gradcheck.errors import LoadError

    try:
        formulas = collect_formulas(modules)
    except LoadError as exc:
        raise click.UsageError(str(exc)) from exc
    if not patterns:
        return formulas
    chosen, ids = [], [f.id for f in formulas]
    for pattern in patterns:
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        hits = [f for f in formulas if fnmatch.fnmatchcase(f.id, glob)]
        if not hits:
            close = difflib.get_close_matches(pattern, ids, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise click.UsageError(f"no formula matches {pattern!r}{hint}")
        chosen += [f for f in hits if f not in chosen]
    return sorted(chosen, key=lambda f: f.id)


def module_options(fn):
    fn = click.option("--module", "-m", "modules", multiple=True, metavar="NAME_OR_PATH",
                      help="Also load formulas from this module (repeatable).")(fn)
    return click.option("--builtin/--no-builtin", default=True, show_default=True,
                        help="Include the built-in catalogue in derivations/.")(fn)


def modules_of(builtin: bool, modules: tuple[str, ...]) -> list[str]:
    chosen = (builtin_modules() if builtin else []) + list(modules)
    if not chosen:
        raise click.UsageError("no modules to load: give --module or drop --no-builtin")
    return chosen


def run_options(fn):
    for decorator in reversed([
        click.option("--examples", "-n", type=click.IntRange(min=1), default=100,
                     show_default=True, help="Hypothesis cases per formula."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed for hypothesis and the upstream gradients."),
        click.option("--mode", type=click.Choice(["auto", "exhaustive", "directional"]),
                     default="auto", show_default=True,
                     help="Element by element, along random directions, or by size."),
    ]):
        fn = decorator(fn)
    return fn


class Cli(click.Group):
    """Click's usage errors exit 2; anything unexpected exits 3 with its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception:
            click.echo("gradcheck: internal error, please report it:\n" + traceback.format_exc(),
                       err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Check hand-derived gradients against central finite differences."""


@main.command("list")
@click.argument("patterns", nargs=-1)
@module_options
def list_cmd(patterns: tuple[str, ...], builtin: bool, modules: tuple[str, ...]) -> None:
    """List the formulas found, with source, variant and expectation."""
    formulas = select(modules_of(builtin, modules), patterns)
    width = max(len(f.id) for f in formulas)
    for f in formulas:
        click.echo(f"{f.id:<{width}}  {f.variant:<10}  expect {f.expect:<9}  {f.source}")


def _progress(fid: str, done: int, total: int) -> None:
    click.echo(f"\r\x1b[2K[{done}/{total}] {fid}", err=True, nl=False)


@main.command()
@click.argument("patterns", nargs=-1)
@run_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown", "junit"]),
              default="table", show_default=True, help="Report format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the report here (atomically) instead of stdout.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes.")
@module_options
def check(patterns, examples, seed, mode, fmt, output, jobs, builtin, modules) -> None:
    """Check formulas over property-generated cases and report per formula."""
    from gradcheck.report import RENDERERS, write_atomic
    from gradcheck.runner import Settings, run_all

    chosen = modules_of(builtin, modules)
    formulas = select(chosen, patterns)
    show = sys.stderr.isatty()
    run = run_all(formulas, Settings(examples=examples, seed=seed, mode=mode),
                  _progress if show else None, jobs=jobs, modules=chosen)
    if show:
        click.echo("\r\x1b[2K", err=True, nl=False)
    if fmt == "table":
        color = output is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        text = RENDERERS[fmt](run, color=color)
    else:
        text = RENDERERS[fmt](run)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            write_atomic(output, text)
        except OSError as exc:
            raise click.FileError(str(output), hint=exc.strerror or str(exc)) from exc
        click.echo(f"report written to {output}", err=True)
    if run.interrupted:
        click.echo("interrupted: the report holds the formulas finished so far", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK if run.ok else EXIT_MISMATCH)


def error_grid(result) -> str:
    """Relative error per element, one 2-D grid per leading index: '.' agrees, 'k' kink."""
    import numpy as np

    if result.rel_error is None or result.failed is None:
        return "(no element-wise data in directional mode)"
    shape = (1,) * max(0, 2 - result.rel_error.ndim) + result.rel_error.shape
    rel, failed = result.rel_error.reshape(shape), result.failed.reshape(shape)
    kinked = result.kinked.reshape(shape)
    out = []
    for lead in np.ndindex(*shape[:-2]):
        title = f"[{', '.join(map(str, lead))}, :, :]" if lead else ""
        out.append(f"{result.wrt}{title}: relative error where it disagrees ('.' agrees)")
        for i in range(shape[-2]):
            cells = ["k" if kinked[lead][i, j] else f"{rel[lead][i, j]:.2g}"
                     if failed[lead][i, j] else "." for j in range(shape[-1])]
            out.append("  " + " ".join(c.rjust(7) for c in cells))
    return "\n".join(out)


@main.command()
@click.argument("formula")
@run_options
@module_options
def explain(formula, examples, seed, mode, builtin, modules) -> None:
    """Show a formula, a fresh verdict, its minimal counterexample and where it is wrong."""
    from gradcheck.runner import Settings, run_formula

    matches = select(modules_of(builtin, modules), (formula,))
    exact = [f for f in matches if f.id == formula]
    if len(matches) > 1 and not exact:
        raise click.UsageError(f"{formula!r} matches {len(matches)} formulas: "
                               + ", ".join(f.id for f in matches))
    f = (exact or matches)[0]
    click.echo(f"{f.id}   ({f.source}; variant {f.variant}, expect {f.expect})")
    click.echo(f"  {f.text}")
    r = run_formula(f, Settings(examples=examples, seed=seed, mode=mode))
    click.echo(f"\nVerdict: {r.status} over {r.cases} cases "
               f"({'as expected' if r.matches_expectation else 'NOT as expected'}); "
               f"max relative error {r.max_rel_error if r.max_rel_error is not None else '-'}")
    if r.failing_result is None:
        if r.message:
            click.echo("\n" + r.message)
        sys.exit(EXIT_OK if r.matches_expectation else EXIT_MISMATCH)
    click.echo("\nMinimal counterexample:\n" + r.failing_result.explain())
    if r.failing_result.status != "error":
        click.echo("\n" + error_grid(r.failing_result))
    sys.exit(EXIT_OK if r.matches_expectation else EXIT_MISMATCH)


if __name__ == "__main__":
    main()
