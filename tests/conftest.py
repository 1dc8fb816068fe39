"""Helpers shared by the test modules: paths, a CliRunner fixture, the timing stripper, and
running a command until it reaches a known point, then signalling it.

Tests marked ``slow`` (several seconds each: subprocesses, whole-catalogue runs, fuzzing)
are left out by ``pytest -m "not slow"``, the quick inner loop; CI runs everything.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def without_seconds(value: Any) -> Any:
    """A report (dict/list) with every timing ("seconds") removed, for comparisons."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def signal_when_marked(args: list[str], mark: Path, sig: int, *, cwd: Path = ROOT,
                       wait: float = 120, env: dict[str, str] | None = None,
                       ) -> subprocess.CompletedProcess[str]:
    """Run ``args``; once the file ``mark`` exists (the fixture under test touches the
    path given in $GRADCHECK_TEST_MARK), send ``sig``; return the finished process."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {}),
                                            "GRADCHECK_TEST_MARK": str(mark)})
    deadline = time.monotonic() + wait
    while not mark.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=wait)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)

def readme_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in README.md."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", readme, re.S)
    assert match, f"README has no block marked {marker!r}"
    return match.group(1)
