"""YAML text exactly as ruamel.yaml 0.17's round-trip dumper writes it when Rasa 3.6 calls it.

Rasa writes YAML with ``rasa.shared.utils.io.write_yaml``: ruamel.yaml's round-trip dumper, width
4096, ``None`` as ``null``, ordered mappings. This module reproduces that text for the values story
files hold — dicts, lists, str, int, float, bool, None, plus :class:`Literal` (a ``|`` block) and
:class:`DoubleQuoted` strings — without depending on a YAML library (``events/`` stays
dependency-free). The facts it follows:

* block style; every non-empty collection in block style, empty ones as ``{}`` / ``[]``;
* mappings indent by 2, a list under a mapping key is not indented (``key:`` / ``- item``), list
  items that are collections start on the dash's line (``- a: 1``, ``- - x``);
* a key is written ``key:`` when its text plus its tag (``!!str`` ...) is shorter than 128 and on
  one line, else as an explicit ``? key`` / ``: value`` pair;
* strings are plain unless YAML 1.2 would read them as something else (``true``, ``null``,
  ``1``, ``1e3``, ``0x1F``, ``2020-01-01``, ``~``, ``<<``, ``=``, ...) or they start with an
  indicator, hold ``: `` or `` #``, edge spaces, line breaks or characters outside YAML's printable
  set; then single quotes, or double quotes when the string holds ``'`` or a line feed or needs
  escapes;
* long lines are folded past column 4096 the way ruamel folds plain, quoted and escaped scalars;
* a ``|+`` block ending the document is followed by ``...``.

Shared (identical) container objects are written in full, never as anchors and aliases.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

__all__ = ["DoubleQuoted", "Literal", "dump"]


class Literal(str):
    """A string written as a YAML literal block (``|``, with chomping and indentation hints)."""

    __slots__ = ()


class DoubleQuoted(str):
    """A string always written double-quoted."""

    __slots__ = ()


def dump(root: Any) -> str:
    """The YAML document for ``root`` (a dict or list).

    Raises TypeError for a value that is not JSON data or one of the two string markers.
    """
    return _Emitter().document(root)


_WIDTH = 4096  # Rasa's YAML_LINE_MAX_WIDTH
_STEP = 2
_BREAKS = "\n\x85\u2028\u2029"
_BLANKS = "\0 \t\r" + _BREAKS
_ESCAPES = {
    "\0": "0",
    "\x07": "a",
    "\x08": "b",
    "\t": "t",
    "\n": "n",
    "\x0b": "v",
    "\x0c": "f",
    "\r": "r",
    "\x1b": "e",
    '"': '"',
    "\\": "\\",
    "\x85": "N",
    "\u2028": "L",
    "\u2029": "P",
}
# Plain words YAML 1.2 reads as something other than a string, by their possible first characters.
_NOT_STRINGS = (
    ("tTfF", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    (
        "-+0123456789.",
        re.compile(
            r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
            r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
    ),
    (
        "-+0123456789",
        re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$"),
    ),
    ("<", re.compile(r"^(?:<<)$")),
    ("~nN", re.compile(r"^(?:~|null|Null|NULL)$")),
    (
        "0123456789",
        re.compile(
            r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)"
            r"[0-9][0-9]?:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?"
            r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9]{2})?))?)$"
        ),
    ),
    ("=", re.compile(r"^(?:=)$")),
    ("!&*", re.compile(r"^(?:!|&|\*)$")),
)
_TAG_LENGTHS = {str: 5, int: 5, bool: 6, type(None): 6, float: 7}  # "!!str", "!!null", ...


def _reads_as_string(text: str) -> bool:
    """Whether ``text`` written plain would be read back as a string (YAML 1.2, ruamel's rules)."""
    if not text:
        return False
    return not any(text[0] in first and rule.match(text) for first, rule in _NOT_STRINGS)


def _printable(char: str) -> bool:
    unicode = (
        char == "\x85"
        or "\xa0" <= char <= "\ud7ff"
        or "\ue000" <= char <= "\ufffd"
        or char >= "\U00010000"
    )
    return char == "\n" or " " <= char <= "~" or (unicode and char != "\ufeff")


def _analyze(text: str) -> tuple[bool, bool, bool]:
    """(plain allowed, single quotes allowed, spans lines) for a string in block context."""
    if not text:
        return True, True, False
    followed = len(text) == 1 or text[1] in _BLANKS
    indicators = text.startswith(("---", "...")) or text[0] in "#,[]{}&*!|>'\"%@`"
    indicators = indicators or (text[0] in "?:-" and followed)
    for i in range(1, len(text)):
        after = i + 1 == len(text) or text[i + 1] in _BLANKS
        indicators = indicators or (text[i] == ":" and after)
        indicators = indicators or (text[i] == "#" and text[i - 1] in _BLANKS)
    pairs = list(itertools.pairwise(text))
    mixed = any((a in _BREAKS and b == " ") or (a == " " and b in _BREAKS) for a, b in pairs)
    single = not mixed and all(_printable(char) for char in text)
    multiline = any(char in _BREAKS for char in text)
    edges = text[0] in " " + _BREAKS or text[-1] in " " + _BREAKS
    return single and not (edges or multiline or indicators), single, multiline


def _scalar_text(value: Any, *, simple_key: bool) -> tuple[str, str]:
    """The text of a scalar and its style: ``""`` plain, ``'`` / ``"`` quoted, ``|`` literal."""
    if value is None:
        return "null", ""
    if isinstance(value, bool):
        return ("true" if value else "false"), ""
    if isinstance(value, int):
        return str(value), ""
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan", ""
        return {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, repr(value).lower()), ""
    if not isinstance(value, str):
        raise TypeError(f"cannot write a {type(value).__name__} in a YAML story")
    if isinstance(value, Literal | DoubleQuoted):
        return str(value), "|" if isinstance(value, Literal) else '"'
    plain, single, multiline = _analyze(value)
    if plain and _reads_as_string(value):
        return value, ""
    if "'" in value or "\n" in value or not single or (simple_key and multiline):
        return value, '"'
    return value, "'"


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return "\\" + _ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


class _Emitter:
    """Writes one YAML document in block style, tracking the column like ruamel's emitter."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.column = 0
        self.whitespace = True  # the last character written is whitespace
        self.indention = True  # the line holds only indentation and indicators so far
        self.open_ended = False  # a "|+" block ended the last line: "..." must close the stream

    def document(self, root: Any) -> str:
        self.node(root, None, "root")
        self.indent_to(0)
        if self.open_ended:
            self.indicator("...", True)
            self.indent_to(0)
        return "".join(self.out)

    def raw(self, data: str) -> None:
        self.out.append(data)
        self.column += len(data)

    def line_break(self, char: str = "\n") -> None:
        self.out.append(char)
        self.column = 0
        self.whitespace = self.indention = True

    def indent_to(self, indent: int) -> None:
        at_indent = self.column == indent and not self.whitespace
        if not self.indention or self.column > indent or at_indent:
            self.line_break()
        if self.column < indent:
            self.whitespace = True
            self.raw(" " * (indent - self.column))

    def indicator(
        self, text: str, spaced: bool, *, whitespace: bool = False, indention: bool = False
    ) -> None:
        self.raw(text if self.whitespace or not spaced else " " + text)
        self.whitespace = whitespace
        self.indention = self.indention and indention
        self.open_ended = False

    def node(self, value: Any, parent: int | None, context: str) -> None:
        """Write ``value`` inside a collection indented at ``parent`` (None: the document root).

        ``context``: "root", "seq" (a list item), "map" (a mapping value), "key" (a simple
        mapping key) or "xkey" (a key written after ``?``).
        """
        if isinstance(value, dict | list) and not value:
            self.indicator("{" if isinstance(value, dict) else "[", True, whitespace=True)
            self.indicator("}" if isinstance(value, dict) else "]", False)
            self.line_break()
        elif isinstance(value, dict):
            indent = 0 if parent is None else parent + _STEP
            for key, item in value.items():
                self.indent_to(indent)
                self.key(key, indent)
                self.node(item, indent, "map")
        elif isinstance(value, list):
            indentless = context == "map" and not self.indention
            indent = 0 if parent is None else parent if indentless else parent + _STEP
            for item in value:
                self.indent_to(indent)
                self.indicator("-", True, indention=True)
                self.node(item, indent, "seq")
        else:
            self.scalar(value, 0 if parent is None else parent + _STEP, context)

    def key(self, key: Any, indent: int) -> None:
        text, _ = _scalar_text(key, simple_key=True)
        if len(text) + _TAG_LENGTHS[type(key)] < 128 and not _analyze(text)[2]:
            self.scalar(key, indent + _STEP, "key")
            self.indicator(":", False)
        else:
            self.indicator("?", True, indention=True)
            self.node(key, indent, "xkey")
            self.indent_to(indent)
            self.indicator(":", True, indention=True)

    def scalar(self, value: Any, indent: int, context: str) -> None:
        text, style = _scalar_text(value, simple_key=context == "key")
        split = context != "key"
        if context == "seq":
            self.indent_to(indent)
        if style == '"':
            self.double_quoted(text, indent, split)
        elif style == "'":
            self.single_quoted(text, indent, split)
        elif style == "|":
            self.literal(text, indent)
        else:
            self.plain(text, indent, split)

    def plain(self, text: str, indent: int, split: bool) -> None:
        """A plain scalar; a single space met past the width becomes a line break (when split)."""
        if not self.whitespace:
            self.raw(" ")
        self.whitespace = self.indention = False
        for run in re.findall(r" +|[^ ]+", text):
            if run == " " and split and self.column > _WIDTH:
                self.indent_to(indent)
                self.whitespace = self.indention = False
            else:
                self.raw(run)

    def single_quoted(self, text: str, indent: int, split: bool) -> None:
        """A single-quoted scalar: ``'`` doubled, inner single spaces past the width folded."""
        self.indicator("'", True)
        for run in re.finditer(rf" +|[{_BREAKS}]+|[^ {_BREAKS}]+", text):
            part = run.group()
            inner = run.start() > 0 and run.end() < len(text)
            if part == " " and split and self.column > _WIDTH and inner:
                self.indent_to(indent)
            elif part[0] in _BREAKS:  # never "\n": strings with "\n" are double-quoted
                for char in part:
                    self.line_break(char)
                self.indent_to(indent)
            else:
                self.raw(part.replace("'", "''"))
        self.indicator("'", False)

    def double_quoted(self, text: str, indent: int, split: bool) -> None:
        """A double-quoted scalar with escapes, folded past the width as ruamel folds it.

        A folded line ends in ``\\``; a continuation that starts with a space escapes it.
        """
        self.indicator('"', True)
        start = 0
        for end in range(len(text) + 1):
            char = text[end] if end < len(text) else None
            if (
                char is None
                or char in '"\\\x85\u2028\u2029\ufeff'
                or not (
                    " " <= char <= "~" or "\xa0" <= char <= "\ud7ff" or "\ue000" <= char <= "\ufffd"
                )
            ):
                if start < end:
                    self.raw(text[start:end])
                    start = end
                if char is not None:
                    self.raw(_escape(char))
                    start = end + 1
            fold = 0 < end < len(text) - 1 and (char == " " or start >= end)
            if split and fold and self.column + (end - start) > _WIDTH:
                self.raw(text[start:end] + "\\")
                start = max(start, end)
                self.indent_to(indent)
                self.whitespace = self.indention = False
                if text[start] == " ":
                    self.raw("\\")
        self.indicator('"', False)

    def literal(self, text: str, indent: int) -> None:
        """A ``|`` block: indentation hint for a leading space or break, ``-`` / ``+`` chomping."""
        chomp = ""
        if text and text[-1] not in _BREAKS:
            chomp = "-"
        elif text and (len(text) == 1 or text[-2] in _BREAKS):
            chomp = "+"
        lead = str(_STEP) if text and text[0] in " " + _BREAKS else ""
        self.indicator("|" + lead + chomp, True)
        self.open_ended = chomp == "+"
        self.line_break()
        for run in re.findall(rf"[{_BREAKS}]+|[^{_BREAKS}]+", text):
            if run[0] in _BREAKS:
                for char in run:
                    self.line_break(char)
            else:
                self.indent_to(indent)
                self.raw(run)
        if chomp == "-":
            self.line_break()
