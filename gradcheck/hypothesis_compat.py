"""The one private hypothesis hook gradcheck uses, in one place, guarded.

Hypothesis mixes literals from every loaded local module into the cases it draws, so one
seed would draw other cases depending on what happens to be imported (the CLI, the plugin,
a test suite). A report must depend on the seed alone, so that mixing is switched off
during gradcheck's runs. The hook is private: if a hypothesis release changes it, runs stay
correct but only less reproducible across programs, and a warning says so, once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

_warned = False


class ReproducibilityWarning(UserWarning):
    """Hypothesis changed under gradcheck: cases may depend on what is imported."""


@contextlib.contextmanager
def seed_alone() -> Iterator[None]:
    """Within this block hypothesis draws cases from the seed alone."""
    global _warned
    try:
        from hypothesis.internal.conjecture import providers as p

        empty = p.Constants(integers=p.SortedSet(), floats=p.SortedSet(key=p.float_to_int),
                            bytes=p.SortedSet(), strings=p.SortedSet())
        original, cache = p._get_local_constants, p.CONSTANTS_CACHE.cache
    except (ImportError, AttributeError, TypeError) as exc:
        if not _warned:
            _warned = True
            import hypothesis

            warnings.warn(
                f"gradcheck cannot switch off hypothesis {hypothesis.__version__}'s mixing of "
                f"module constants into cases ({type(exc).__name__}: {exc}): the cases drawn "
                "for a seed may now depend on which modules are imported", ReproducibilityWarning,
                stacklevel=3)
        yield
        return
    p._get_local_constants = lambda: empty
    cache.clear()
    try:
        yield
    finally:
        p._get_local_constants = original
        cache.clear()
