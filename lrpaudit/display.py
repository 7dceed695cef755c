"""The one home for showing a string that came from a file: node, input and output names, doc strings, paths,
config values, manifest ids. Such a string is data; it must never drive what displays it.

A name read from a model could otherwise set a terminal's title or move its cursor (ESC and BEL sequences, the
8-bit CSI), split a CI log line so that a forged ``::error`` workflow command starts the next one (CR, LF, NEL,
U+2028), reorder what a reader sees (bidi controls such as U+202E), crash or restyle a rich table (``[/x]``,
``[bold]``, ``:emoji:`` codes), or add links and HTML to a Markdown summary.

- :func:`one_line` makes one printable line: every character that ``str.isprintable`` rejects (Unicode
  categories Cc, Cf, Cs, Co, Cn, Zl, Zp, and Zs other than the space: NUL, ESC, BEL, CR, LF, TAB, DEL, C1
  controls, bidi and zero-width format characters, line and paragraph separators, surrogates left by undecodable
  bytes, private-use and unassigned code points) is written as its Python escape (``\\x1b``, ``\\n``,
  ``\\u202e``). Every stderr line of the CLI goes through it (they all start with ``lrpaudit:``).
- :func:`safe` is that, and it also breaks the two-character sequences that start a CI log command when a
  line begins with them (``::`` for GitHub workflow commands, ``##`` for ``##[...]`` and Azure's ``##vso[...]``):
  the second character is escaped (``:\\x3a``, ``#\\x23``). Tables wrap long cells, so any part of a string
  may begin a line of output: every string read from a file goes through ``safe`` wherever it is shown, and every
  output below starts from it.
- :func:`rich_text`: a rich ``Text`` of the safe line, for tables and console lines; never parsed as markup or
  emoji.
- :func:`markdown` (text in a Markdown table cell), :func:`markdown_code` (inside a code span), :func:`html`
  (HTML, also the raw HTML of a Markdown summary) and :func:`xml` (JUnit; ElementTree adds the entities).
- :func:`json_text` keeps JSON exact (the same strings after parsing) while writing non-printable characters as
  ``\\u`` escapes, so a JSON report printed on a terminal cannot drive it either.
"""

from __future__ import annotations

import html as _html
import re

# What can start an inline construct: emphasis, code, links and images, HTML and entities, tables, strikethrough,
# emoji shortcodes and autolinks (``:``).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&:])")


def one_line(text: object) -> str:
    """``text`` as one printable line: non-printable characters as Python escapes (idempotent)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def safe(text: object) -> str:
    """A string from a file, made safe to show anywhere: :func:`one_line`, and no ``::`` or ``##`` that could
    start a CI log command where a wrapped line begins (idempotent)."""
    return one_line(text).replace("::", ":\\x3a").replace("##", "#\\x23")


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def rich_text(text: object, style: str | None = None, framed: bool = False):
    """A rich ``Text`` of ``safe(text)``: shown as written, never as markup or emoji.

    ``framed``: a cell of a table whose every line starts with a border character, where no part of the text
    can begin a line; there ``::`` stays as written (``aten::linear``) and only :func:`one_line` applies.
    """
    from rich.text import Text

    return Text(one_line(text) if framed else safe(text), style=style or "")


def markdown(text: object) -> str:
    """``safe(text)`` for Markdown prose or a table cell: every Markdown and HTML syntax character
    backslash-escaped (GitHub-flavoured Markdown allows that for any ASCII punctuation)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", safe(text))


def markdown_code(text: object) -> str:
    """A Markdown code span of ``safe(text)``: backticks cannot close it, pipes cannot split a table row."""
    body = safe(text).replace("`", "'").replace("|", "\\|")
    return f"`{body}`"


def html(text: object) -> str:
    """``safe(text)`` with HTML entities for ``& < > " '``."""
    return _html.escape(safe(text), quote=True)


def xml(text: object) -> str:
    """``safe(text)`` for XML 1.0: every character it keeps is allowed there (ElementTree escapes ``& < >``)."""
    return safe(text)


_JSON_UNSAFE = re.compile(r"[^\x20-\x7e\n]")


def json_text(text: str) -> str:
    """JSON text with each non-printable character inside strings written as a ``\\u`` escape.

    Only characters that JSON writers leave raw are touched (``ensure_ascii=False`` keeps non-ASCII letters
    readable), and the result parses to exactly the same data.
    """

    def escape(match: re.Match) -> str:
        ch = match.group()
        if ch.isprintable():
            return ch
        code = ord(ch)
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return _JSON_UNSAFE.sub(escape, text)
