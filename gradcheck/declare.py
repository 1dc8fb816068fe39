"""Declaring formulas: a derivation is a forward, a strategy of cases, and its formulas.

A formula is the vector-Jacobian product of the forward with respect to one argument,
``vjp(dy, **case) -> d<dy, forward(**case)>/d case[wrt]``. Declare one per line::

    linear = Derivation("linear", forward, cases=linear_cases(), source="seed 000, Problem 2")
    linear.formula("b", lambda dy, W, x, b: dy, text="dL/db = dL/dy")

A longer formula is a named function just above the line that registers it. Any module
that defines ``Derivation`` objects at top level can be loaded by name or path with
``load_derivations``; the engine never imports a catalogue itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradcheck.errors import LoadError

VARIANTS = ("as-written", "reference")  # the catalogue's convention; any VARIANT_NAME works
VARIANT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*")
EXPECTATIONS = ("pass", "fail", "nonsmooth")


@dataclass(eq=False)
class Formula:
    """One hand-derived gradient: the VJP of ``derivation.forward`` with respect to ``wrt``."""

    derivation: Derivation
    wrt: str
    vjp: Callable[..., Any]
    variant: str = "reference"
    expect: str = "pass"
    text: str = ""
    source: str = ""

    @property
    def id(self) -> str:
        return f"{self.derivation.name}.d{self.wrt}[{self.variant}]"

    def __repr__(self) -> str:
        return f"<Formula {self.id} expect={self.expect}>"


@dataclass(eq=False)
class Derivation:
    """A forward function, a hypothesis strategy of cases, and the formulas for its gradients.

    ``forward(**case)`` returns an array; ``cases`` draws ``case`` dicts (float arrays and
    static parameters such as a stride). ``batched=True`` declares that ``forward`` also
    accepts a leading batch axis on any one float argument and returns a leading batch
    axis on its output, so the engine can evaluate perturbations in chunks.
    ``classify(case)`` names a case's geometry class (for coverage counts). ``dtype``
    fixes the dtype its cases are checked in (None: the run's setting), and ``runs_on``
    says where the forward and backward run (framework, device, dtype), for reports.
    ``outputs=("h", "c")`` declares a forward returning several arrays (a tuple in that
    order, or a dict by name); ``backward`` registers one backward returning the gradients
    of several arguments. gradcheck.outputs and gradcheck.forms compile them (and
    gradcheck.layers, layer objects) to a forward returning one array and one vjp per
    argument.
    ``structure`` maps an argument's name to its declared Jacobian structure (a
    ``gradcheck.structure`` declaration, or a function of the case returning one), which
    the runner passes to ``check_vjp`` for that argument's formulas.
    """

    name: str
    forward: Callable[..., Any]
    cases: Any
    source: str = ""
    batched: bool = False
    classify: Callable[[dict[str, Any]], str] | None = None
    formulas: list[Formula] = field(default_factory=list)
    module: str = ""
    outputs: tuple[str, ...] | None = None
    dtype: str | None = None
    runs_on: str = ""
    structure: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(
                f"Derivation name must be an identifier, got name={self.name!r}"
            )
        if self.outputs is not None:
            from gradcheck.outputs import several_outputs

            several_outputs(self)

    def _vjp_of(self, wrt: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The engine's vjp for a declared formula (compiled by gradcheck.forms if need be)."""
        if self.outputs is None:
            return fn
        from gradcheck.forms import compile_formula

        return compile_formula(self, wrt, fn)

    def backward(self, wrt: Any, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """One backward for the arguments ``wrt``: ``fn(dy, **case)`` returns their gradients
        as a tuple in that order or a dict by name; each is its own formula. ``options`` are
        ``formula``'s (``expect`` may also map names to expectations); a decorator without fn.
        """
        from gradcheck.forms import register_backward

        return register_backward(self, wrt, fn, **options)

    @classmethod
    def from_torch(cls, name: str, function: Any, *, cases: Any, **options: Any) -> Derivation:
        """A torch.autograd.Function (or a function of tensors): ``gradcheck.torch``."""
        return _adapter("torch").derivation(name, function, cases=cases, **options)

    @classmethod
    def from_jax(cls, name: str, function: Any, *, cases: Any, **options: Any) -> Derivation:
        """A jax function with a custom_vjp or custom_jvp rule: ``gradcheck.jax``."""
        return _adapter("jax").derivation(name, function, cases=cases, **options)

    def formula(
        self,
        wrt: str,
        vjp: Callable[..., Any] | None = None,
        *,
        variant: str = "reference",
        expect: str = "pass",
        text: str = "",
        source: str | None = None,
    ) -> Any:
        """Register ``vjp`` as the gradient with respect to ``wrt`` (a decorator without it)."""
        if not isinstance(variant, str) or not VARIANT_NAME.fullmatch(variant):
            raise ValueError(
                f"{self.name}.d{wrt}: variant must be an identifier-like name (letters, "
                f"digits, '_', inner '-'; e.g. 'reference', 'as-written', 'fast'), "
                f"got {variant!r}"
            )
        if expect not in EXPECTATIONS:
            raise ValueError(
                f"{self.name}.d{wrt}: expect must be one of {EXPECTATIONS}, got {expect!r}"
            )

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            origin = self.source if source is None else source
            f = Formula(self, wrt, self._vjp_of(wrt, fn), variant, expect, text, origin)
            if any(other.id == f.id for other in self.formulas):
                raise ValueError(f"duplicate formula id {f.id!r} in derivation {self.name!r}")
            self.formulas.append(f)
            return fn

        return register if vjp is None else register(vjp)


def _adapter(framework: str) -> Any:
    """gradcheck.torch or gradcheck.jax, imported only when a derivation asks for it."""
    try:
        return importlib.import_module(f"gradcheck.{framework}")
    except ModuleNotFoundError as exc:
        if exc.name != framework:
            raise
        raise ModuleNotFoundError(
            f"Derivation.from_{framework} needs {framework}, which is not installed: "
            f"pip install 'gradcheck[{framework}]'", name=framework) from exc


def is_path(spec: str) -> bool:
    """A spec names a file when it ends in .py, has a path separator, or is a file."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec or Path(spec).is_file()


@contextlib.contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """``folder`` first on sys.path while a module loads (then as before)."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def locate(spec: str) -> Path:
    """The file a module spec names, by the rule ``_import`` loads it with (no import of
    the module itself; a dotted name's parent packages are imported)."""
    if is_path(spec):
        path = (Path.cwd() / spec).resolve()
        if not path.is_file():
            raise LoadError(f"module file {spec!r} does not exist (paths are relative to the "
                            f"current directory, {str(Path.cwd())!r})")
        return path
    try:
        with _importable(Path.cwd()):
            found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as exc:
        found, why = None, f": {exc}"
    else:
        why = ""
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise LoadError(f"cannot find module {spec!r} from the current directory or sys.path"
                        f"{why}")
    return Path(found.origin).resolve()


def _import(spec: str) -> Any:
    """One rule for the CLI and the plugin: a path (``.py``, or with a separator) is relative
    to the current directory and loads with its own folder importable; a dotted name is
    imported from the current directory, then sys.path."""
    if is_path(spec):
        path = (Path.cwd() / spec).resolve()
        if not path.is_file():
            raise LoadError(f"module file {spec!r} does not exist (paths are relative to the "
                            f"current directory, {str(Path.cwd())!r})")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        name = f"gradcheck_user_{path.stem}_{digest}"  # the same in every process
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise LoadError(f"cannot load {spec!r} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            with _importable(path.parent):
                module_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise LoadError(
                f"module {spec!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    try:
        with _importable(Path.cwd()):
            try:  # its own folder importable too, as for a path
                folder = locate(spec).parent
            except LoadError:  # importing it says why better
                folder = Path.cwd()
            with _importable(folder):
                return importlib.import_module(spec)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise LoadError(f"module {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc


def load_derivations(spec: str) -> list[Derivation]:
    """The derivations defined at top level of a module given by dotted name or file path."""
    module = _import(spec)
    found = [v for v in vars(module).values() if isinstance(v, Derivation)]
    if not found:
        raise LoadError(f"module {spec!r} defines no gradcheck.Derivation at top level")
    for d in found:
        d.module = d.module or spec
    return found


def unique(specs: Iterable[str], *, strict: bool = True) -> dict[Path, str]:
    """Each module file the specs name, with the first spec naming it: one module named
    two ways (``mine.py`` and ``./mine.py``, ``mine`` and ``mine.py``) is loaded once. A
    spec that cannot be found is LoadError (``strict``), else kept as it is for loading
    to say why."""
    out: dict[Path, str] = {}
    for spec in specs:
        try:
            out.setdefault(locate(spec), spec)
        except LoadError:
            if strict:
                raise
            out.setdefault(Path("<unfound>", spec), spec)
    return out


def collect_formulas(specs: Iterable[str]) -> list[Formula]:
    """All formulas of the given modules (each file once, however named), sorted by id;
    the same id from two different files is an error."""
    formulas: dict[str, Formula] = {}
    for spec in unique(specs, strict=False).values():
        for derivation in load_derivations(spec):
            for f in derivation.formulas:
                if f.id in formulas and formulas[f.id] is not f:
                    raise LoadError(
                        f"duplicate formula id {f.id!r}: defined in "
                        f"{formulas[f.id].derivation.module!r} and in {spec!r}"
                    )
                formulas[f.id] = f
    return [formulas[k] for k in sorted(formulas)]
