"""Cells of the CSV files brandguard writes: safe to open in a spreadsheet, and every file name round-trips.

A file name is a string of bytes to the filesystem; a CSV file must be valid UTF-8 text. Each text cell is
therefore written as follows (and read back exactly by :func:`decode_cell`):

1. the text is taken as the bytes the filesystem holds (``os.fsencode``: a name that is not UTF-8 keeps its
   raw bytes);
2. each byte that is not part of valid UTF-8 is written ``\\xHH`` (two upper-case hex digits), a control
   character (U+0000..U+001F, U+007F: tab, newline, carriage return...) is written ``\\xHH`` too, and a
   backslash is doubled (``\\\\``); every other character is written as it is;
3. formula injection (OWASP, "CSV Injection"): a cell whose text starts with ``=``, ``+``, ``-``, ``@`` (or
   tab / carriage return, already escaped by step 2) gets a leading single quote ``'``, which spreadsheets
   show as text and do not evaluate. A cell that starts with a quote of its own gets one more, so a reader
   strips exactly one leading quote. Plain decimal numbers (``-0.1234``, ``1e-05``) are left alone: a
   spreadsheet reads them as numbers and evaluates nothing.

So ``caf\\xE9.jpg`` is the Latin-1 name ``café.jpg`` whose ``é`` is the single byte 0xE9, and
``'=cmd|' calc'!A0.jpg`` is the file ``=cmd|' calc'!A0.jpg``.

Example:
    >>> from brandguard.csvcells import decode_cell, encode_cell
    >>> encode_cell("=cmd|' calc'!A0.jpg")
    "'=cmd|' calc'!A0.jpg"
    >>> name = b"caf\\xe9.jpg".decode("utf-8", "surrogateescape")   # how Python lists such a file
    >>> encode_cell(name)
    'caf\\\\xE9.jpg'
    >>> decode_cell(encode_cell(name)) == name
    True
"""

from __future__ import annotations

import re

__all__ = ["FORMULA_STARTS", "decode_cell", "decode_row", "encode_cell", "encode_row"]

#: first characters a spreadsheet may evaluate as a formula (OWASP); a leading quote is escaped too
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPE = re.compile(r"\\(\\|x[0-9A-Fa-f]{2})")


def _escape(text: str) -> str:
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no filesystem produced: keep it visible, never crash
        data = text.encode("utf-8", "backslashreplace")
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{o - 0xDC00:02X}")
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02X}")
        else:
            out.append(ch)
    return "".join(out)


def encode_cell(text: str) -> str:
    """The CSV cell that stands for ``text`` (any str, including file names holding non-UTF-8 bytes).

    The result is valid UTF-8, holds no control character, and never starts with a formula character
    unless it is a plain number. See the module docstring for the exact rules.

    Args:
        text: the value; file names as Python lists them (``os.fsdecode``, surrogate escapes included).

    Returns:
        the escaped, spreadsheet-safe cell; :func:`decode_cell` gives ``text`` back.
    """
    cell = _escape(str(text))
    if cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell):
        cell = "'" + cell
    return cell


def decode_cell(cell: str) -> str:
    """The text a cell written by :func:`encode_cell` stands for (file names as ``os.fsdecode`` gives them).

    Args:
        cell: a cell as read from the CSV.

    Returns:
        the original text; bytes that are not UTF-8 come back as surrogate escapes, so the result opens
        the same file on this system.
    """
    cell = cell.removeprefix("'")
    if "\\" not in cell:
        return cell
    parts: list[bytes] = []
    pos = 0
    for m in _ESCAPE.finditer(cell):
        parts.append(cell[pos:m.start()].encode("utf-8", "surrogateescape"))
        code = m.group(1)
        parts.append(b"\\" if code == "\\" else bytes([int(code[1:], 16)]))
        pos = m.end()
    parts.append(cell[pos:].encode("utf-8", "surrogateescape"))
    return b"".join(parts).decode("utf-8", "surrogateescape")


def encode_row(row: dict[str, str]) -> dict[str, str]:
    """:func:`encode_cell` applied to every value of a row."""
    return {k: encode_cell("" if v is None else str(v)) for k, v in row.items()}


def decode_row(row: dict[str, str]) -> dict[str, str]:
    """:func:`decode_cell` applied to every value of a row read with :class:`csv.DictReader`."""
    return {k: decode_cell(v) if isinstance(v, str) else v for k, v in row.items()}
