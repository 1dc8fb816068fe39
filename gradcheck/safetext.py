"""Strings from user code (ids, texts, messages, parameters) made safe for a report.

A formula's id, text and messages come from user code and may hold anything: lone
surrogates (which no UTF-8 file can hold), control characters (ESC moves a terminal's
cursor, NUL is not XML), newlines (which split a table row), markup. Every renderer passes
such strings through one of these before adding its own escaping (HTML, Markdown, XML).
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, lone surrogates, the line and paragraph separators, and the two
# noncharacters XML 1.0 excludes; \t and \n are kept by `printable`, escaped by `one_line`
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufffe\uffff]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with every unsafe character written as a visible escape (``\\x1b``,
    ``\\udc80``); tabs and newlines kept. Valid UTF-8 and valid XML 1.0 text."""
    return _UNSAFE.sub(_escape, str(value))


def one_line(value: Any) -> str:
    """As ``printable``, and newlines, carriage returns and tabs escaped too."""
    return _UNSAFE_LINE.sub(_escape, str(value))


def valid(value: Any) -> Any:
    """A JSON-like value with every string (and key) made ``printable``."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {valid(k) if isinstance(k, str) else k: valid(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid(v) for v in value]
    return value


# the ASCII punctuation that can start markup in a CommonMark/GFM line: emphasis, code,
# links, images, HTML tags and entities, strikethrough, table cells, math ($ on GitHub)
_MD_MARKUP = re.compile(r"([\\`*_\[\]<>&|~!{}$])")


def markdown_inline(value: Any) -> str:
    """Inert Markdown for a table cell: one line, markup characters backslash-escaped
    (CommonMark), so no emphasis, link, HTML tag or column separator can form."""
    return _MD_MARKUP.sub(r"\\\1", one_line(value))


def markdown_code(value: Any) -> str:
    """A Markdown code span (literal, so inert) on one line for a table cell: delimited by
    more backticks than any run inside, its pipes escaped (GFM splits cells first)."""
    text = one_line(value).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a stand-in naming the type if that repr raises (user objects)."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} object; its repr raised {type(exc).__name__}>"
