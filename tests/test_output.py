"""Where a report goes: symlinks followed, devices and FIFOs written in place, temporary files
of killed writers cleaned up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest

from gradcheck.report import unwritable, write_atomic


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert unwritable(link) is None
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "later.json")
    write_atomic(link, "new")
    assert link.is_symlink() and (tmp_path / "later.json").read_text() == "new"


def test_a_fifo_is_written_to_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    assert unwritable(fifo) is None
    write_atomic(fifo, "report")
    reader.join(10)
    assert got == ["report"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_character_device_is_written_to_directly(tmp_path):
    null = tmp_path / "null"
    try:  # a copy of /dev/null: needs root (CAP_MKNOD)
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        null.write_text("probe")
    except OSError:
        pytest.skip("cannot create a character device here")
    assert unwritable(null) is None
    write_atomic(null, "report")
    assert stat.S_ISCHR(null.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_temporary_file_left_by_a_killed_writer_is_removed(tmp_path):
    target = tmp_path / "r.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".r.json.gradcheck-{dead}-abc123.tmp"
    live = tmp_path / f".r.json.gradcheck-{os.getpid()}-def456.tmp"  # a writer still running
    other = tmp_path / ".other.json.gradcheck-1-x.tmp"
    for p in (stale, live, other):
        p.write_text("partial")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert not stale.exists() and live.exists() and other.exists()
