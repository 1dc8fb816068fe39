"""A counterexample that can be checked again: its values, files, printout and Python.

A counterexample's arrays and the upstream gradient travel with it: inline in the JSON
report as nested lists when small (floats written so that they read back bit for bit), in
an ``.npz`` file beside the report when large. ``load_case`` reads either back;
``snippet`` prints the few lines of Python that rebuild the case and call ``check_vjp``.
A static parameter written as a JSON list reads back as a tuple.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

INLINE = 1000  # elements: larger arrays go to an .npz file instead of the JSON report
SHOWN = INLINE  # elements: arrays up to this size are printed and written into the snippet
NAME_CHARS = 60  # of a case file's readable prefix; a hash of the whole id follows it
UPSTREAM = "__upstream__"
META = "__meta__"


def encode(arr: np.ndarray) -> dict[str, Any]:
    """Dtype, shape and (for a small array) the values as nested lists; Python's float repr
    round-trips, so float64 and float32 values read back exactly."""
    small = arr.size <= INLINE
    return {"dtype": arr.dtype.str if arr.dtype.kind not in "fiub" else arr.dtype.name,
            "shape": [int(s) for s in arr.shape], "values": arr.tolist() if small else None}


def decode(entry: dict[str, Any]) -> np.ndarray:
    return np.array(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])


def values(case: dict[str, Any], upstream: np.ndarray | None) -> dict[str, Any]:
    """The case's arrays (by name) and the upstream gradient, for a counterexample record."""
    arrays = {k: encode(np.asarray(v)) for k, v in case.items() if isinstance(v, np.ndarray)}
    return {"inputs": arrays, "upstream": None if upstream is None else encode(upstream),
            "npz": None}


def is_large(counterexample: dict[str, Any]) -> bool:
    entries = [*counterexample.get("inputs", {}).values(), counterexample.get("upstream")]
    return any(e is not None and e["values"] is None for e in entries)


def file_name(formula_id: str) -> str:
    """A file name for a formula's case: distinct ids give distinct names (a hash of the
    whole id follows a readable prefix), and its length is bounded whatever the id."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", formula_id).strip("_.")[:NAME_CHARS]
    digest = hashlib.sha1(formula_id.encode("utf-8")).hexdigest()[:10]
    return f"{prefix}-{digest}.npz"


def save_case(path: str | Path, meta: dict[str, Any], case: dict[str, Any],
              upstream: np.ndarray | None) -> Path:
    """An .npz holding the case's arrays, the upstream gradient and, as JSON, the rest:
    formula id, module, wrt, seed, mode, dtype and the static parameters."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in case.items() if isinstance(v, np.ndarray)}
    static = {k: _plain(v) for k, v in case.items() if k not in arrays}
    contents: dict[str, Any] = {**arrays, META: np.array(json.dumps({**meta, "static": static}))}
    if upstream is not None:
        contents[UPSTREAM] = upstream
    np.savez(target, **contents)
    return target


def load_case(path: str | Path, formula_id: str | None = None
              ) -> tuple[dict[str, Any], dict[str, Any], np.ndarray | None]:
    """(meta, case, upstream) from an .npz written by gradcheck, or from a JSON report
    (``formula_id`` names the formula whose counterexample to read; the .npz the report
    names for it must hold that formula's case: ValueError otherwise). An .npz read
    directly is not checked against ``formula_id``: a case may be checked against another
    formula of the same gradient (its ``meta['id']`` says whose case it was)."""
    source = Path(path)
    if source.suffix == ".npz":
        with np.load(source, allow_pickle=False) as data:
            meta = json.loads(str(data[META]))
            case = {k: data[k] for k in data.files if k not in (META, UPSTREAM)}
            upstream = data[UPSTREAM] if UPSTREAM in data.files else None
        case.update({k: _tuples(v) for k, v in meta.pop("static", {}).items()})
        return meta, case, upstream
    report = json.loads(source.read_text(encoding="utf-8"))
    found = [f for f in report.get("formulas", []) if f["id"] == formula_id]
    if not found or not found[0].get("counterexample"):
        raise ValueError(f"{str(source)!r} holds no counterexample of {formula_id!r}")
    c = found[0]["counterexample"]
    if c.get("npz"):
        meta, case, upstream = load_case(source.parent / c["npz"])  # absolute stays absolute
        if meta.get("id") != formula_id:
            raise ValueError(f"{str(source.parent / c['npz'])!r}, which {str(source)!r} names "
                             f"for {formula_id!r}, holds the case of {meta.get('id')!r}")
        return meta, case, upstream
    if "inputs" not in c or is_large(c):
        raise ValueError(f"{str(source)!r}: the counterexample of {formula_id!r} has no values")
    return from_record(c, str(formula_id))


def from_record(c: dict[str, Any], formula_id: str
                ) -> tuple[dict[str, Any], dict[str, Any], np.ndarray | None]:
    """(meta, case, upstream) from a report's counterexample record (small arrays only)."""
    case: dict[str, Any] = {k: decode(e) for k, e in c["inputs"].items()}
    case.update({k: _tuples(v) for k, v in c.get("params", {}).items() if k not in case})
    meta = {k: c.get(k) for k in ("wrt", "seed", "mode", "dtype", "module")}
    meta["id"] = formula_id
    return meta, case, None if c.get("upstream") is None else decode(c["upstream"])


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def printout(case: dict[str, Any], upstream: np.ndarray | None) -> str:
    """The arrays numpy style, each up to SHOWN elements (larger: shape and dtype only)."""
    items = [(k, v) for k, v in case.items() if isinstance(v, np.ndarray)]
    if upstream is not None:
        items.append(("upstream dy", upstream))
    lines = []
    for name, arr in items:
        if arr.size > SHOWN:
            lines.append(f"{name} = <{arr.dtype} array of shape {arr.shape}>")
        else:
            text = np.array2string(arr, precision=17, floatmode="unique", separator=", ",
                                   max_line_width=88, threshold=SHOWN + 1)
            lines.append(f"{name} = " + text.replace("\n", "\n" + " " * (len(name) + 3)))
    return "\n".join(lines)


def too_large(case: dict[str, Any], upstream: np.ndarray | None) -> bool:
    """Whether ``snippet`` needs the case in a file: an array over SHOWN elements."""
    arrays = [v for v in case.values() if isinstance(v, np.ndarray)]
    return any(a.size > SHOWN for a in [*arrays, *([] if upstream is None else [upstream])])


def snippet(meta: dict[str, Any], case: dict[str, Any], upstream: np.ndarray | None,
            file: str | None = None) -> str:
    """Python that rebuilds the case and checks it again with ``check_vjp``.

    The seed draws the same upstream gradient ``dy`` again; the call does not pass it as
    ``upstream=``, since the random directions and noise probes that follow would then be
    drawn from another point of the seed's stream.

    Small arrays are written out; otherwise the case is read from ``file`` (an .npz, or the
    JSON report holding this counterexample)."""
    inline = not too_large(case, upstream)
    lines = ["import numpy as np", "from gradcheck import check_vjp, collect_formulas"]
    if not inline:
        lines[-1] += "\nfrom gradcheck.repro import load_case"
    module, folder = where_module(str(meta["module"]))
    if folder is not None:
        lines[:0] = ["import sys", f"sys.path.insert(0, {folder!r})  # where {module} was found"]
    lines += ["",
              f"f = next(f for f in collect_formulas([{module!r}]) "
              f"if f.id == {meta['id']!r})"]
    if inline:
        parts = [f"{k!r}: {_literal(v)}" for k, v in case.items()]
        lines.append("case = {" + ",\n        ".join(parts) + "}")
        lines.append(f"dy = {_literal(upstream)}" if upstream is not None else "dy = None")
    else:
        if file is None:
            raise ValueError(f"the case of {meta['id']!r} is too large to write out; save it "
                             "(save_case) and pass its file")
        where = file
        extra = "" if where.endswith(".npz") else f", {meta['id']!r}"
        lines.append(f"_, case, dy = load_case({where!r}{extra})")
    lines += [f"r = check_vjp(f.derivation.forward, f.vjp, case, {meta['wrt']!r}, "
              f"seed={meta['seed']!r}, mode={meta['mode']!r},",
              f"              dtype={meta['dtype']!r}, batched=f.derivation.batched)",
              "assert dy is None or np.array_equal(r.upstream, dy)  # the seed draws dy again",
              "print(r.explain())"]
    return "\n".join(lines)


def where_module(spec: str) -> tuple[str, str | None]:
    """How a snippet run from anywhere finds the module ``spec``: a path made absolute; a
    dotted name with the folder it was resolved from (for sys.path). As typed when it
    cannot be found from here (say, a report rendered elsewhere)."""
    from gradcheck.declare import is_path, locate
    from gradcheck.errors import LoadError

    try:
        found = locate(spec)
    except LoadError:
        return spec, None
    if is_path(spec):
        return str(found), None
    base = found.parent.parent if found.name == "__init__.py" else found.parent
    root = base.parents[spec.count(".") - 1] if "." in spec else base
    return spec, None if str(root) in sys.path else str(root)


def _literal(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r}, dtype={v.dtype.name!r})"
    return repr(v)


def save_large(results: list[Any], base: Path, folder: Path, *, absolute: bool = False
               ) -> list[Path]:
    """Save each counterexample too large to inline to ``base/folder/<file_name(id)>`` and
    record that path in it: relative to ``base`` (where the report is), or ``absolute``
    (a report on stdout has no folder to be relative to)."""
    saved = []
    for r in results:
        c = r.counterexample
        if not c or r.failing_case is None or not is_large(c):
            continue
        meta = {k: c.get(k) for k in ("wrt", "seed", "mode", "dtype", "module")}
        meta["id"] = r.id
        upstream = None if r.failing_result is None else r.failing_result.upstream
        saved.append(save_case(base / folder / file_name(r.id), meta, r.failing_case, upstream))
        c["npz"] = str(saved[-1].resolve()) if absolute else str(folder / file_name(r.id))
    return saved
