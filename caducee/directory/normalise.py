"""Search keys: names folded to plain lower-case words, so that search ignores accents and case.

A person types ``lefevre`` or ``LEFÈVRE`` and expects ``Lefèvre``. The directory
stores, next to each name, its folded form (accents stripped, case folded,
punctuation turned into single spaces) and indexes it; a prefix search is then
an index range scan on both SQLite and PostgreSQL, with no engine-specific
collation or extension. The same function folds the query text, so both sides
always agree.
"""

from __future__ import annotations

import unicodedata

# Letters that Unicode does not decompose into a base letter plus a mark.
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})


# ASCII punctuation and controls → space; the fast path for the usual, unaccented name.
_ASCII_SEPARATORS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def fold(text: str | None) -> str:
    """Fold ``text`` to lower-case words without accents, separated by one space.

    Apostrophes and hyphens separate words (``D'ARC`` → ``d arc``,
    ``Jean-Pierre`` → ``jean pierre``), so a search for any word start matches.
    """
    if not text:
        return ""
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_SEPARATORS).split())
    decomposed = unicodedata.normalize("NFKD", text.casefold()).translate(_LIGATURES)
    bare = decomposed.translate(_COMBINING)
    if bare.isascii():  # most accented names, once their marks are gone
        return " ".join(bare.translate(_ASCII_SEPARATORS).split())
    chars = [char if char.isalnum() else " " for char in bare]
    return " ".join("".join(chars).split())


class _CombiningMarks(dict[int, str | None]):
    """A ``str.translate`` table that deletes combining marks, learnt one character at a time.

    Equivalent to dropping every character whose ``unicodedata.combining`` is
    not 0, but the loop runs in C: a national import folds a few hundred
    thousand accented names, and the per-character Python loop was most of it.
    """

    def __missing__(self, code: int) -> str | None:
        kept = None if unicodedata.combining(chr(code)) else chr(code)
        if len(self) < 65_536:  # bounded, whatever text comes in
            self[code] = kept
        return kept


_COMBINING = _CombiningMarks()


def join_keys(*parts: str | None) -> str:
    """Fold and join several name parts into one key (empty parts are skipped)."""
    return " ".join(folded for folded in (fold(part) for part in parts) if folded)


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``.

    ``key >= prefix AND key < prefix_upper_bound(prefix)`` is a prefix match that
    any B-tree index on a binary-collated column can answer.
    """
    if not prefix:
        raise ValueError("empty prefix")
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # skip the surrogates, which cannot be stored
        code = 0xE000
    if code > 0x10FFFF:  # pragma: no cover - fold() never ends a key with U+10FFFF
        return prefix + "\U0010ffff"
    return prefix[:-1] + chr(code)
