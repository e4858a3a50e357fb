"""Columnar reading of the extractions: blocks of lines, split and checked with pyarrow.

A national extraction has a million lines; checking them one by one in Python
cost about 60 µs of CPU per line. This module does the same work per *block*
of lines (a few MiB) with pyarrow's compute kernels, which run in C++ over
whole columns and release the GIL:

- **pyarrow, not polars**: pyarrow's CSV reader parses a block of ``|``-separated
  lines into columns in C++ and its compute kernels (string slicing, regex,
  joins, arithmetic, dictionary encoding) cover every check we make, with a
  bounded block size so that memory does not grow with the file; it is
  already a dependency of the lock file, and its arrays cost no copy to write
  to PostgreSQL's ``COPY`` (its CSV writer) or to hand to SQLite.
- **Lines are cut here, not by the CSV reader**: the reader counts a lone
  ``\\r`` as a line end, cannot report a malformed line that is not valid
  UTF-8, and drops blank lines without saying where. Cutting blocks on ``\\n``
  ourselves keeps the line numbers of the rejection report exact: a line that
  is not plainly well formed (wrong number of fields, not UTF-8, a NUL, too
  long, blank) is handed back to the row-by-row path, which says why it is
  refused exactly as before. Only plainly well-formed lines reach the reader.
- **Identifier checks** (RPPS and ADELI keys, FINESS and SIRET shapes) are
  vectorised: a line whose values the kernels cannot vouch for is, again,
  handed to the row mapper (:func:`caducee.directory.formats.map_mss_row`),
  which is the reference: the columnar mapping only ever takes the lines on
  which both give the same row, and a test compares them line by line.
- **Name folding** (:func:`caducee.directory.normalise.fold`) runs once per
  distinct value (dictionary encoding), not once per line: a million lines
  hold far fewer distinct names, departments or routing lines. ASCII names and
  names accented with Latin-1 letters (most French names) are folded by
  kernels (lower case, NFKD, marks dropped); ``fold`` itself only folds the
  rest, and a test compares both on every Latin letter.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import IO, Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pa_csv  # type: ignore[import-untyped]

from caducee.directory.formats import (
    BAL_TYPES,
    NOT_PHARMACY_WORDS,
    PHARMACY_WORDS,
    Layout,
    city_from_routing,
)
from caducee.directory.normalise import fold

__all__ = [
    "BLOCK_BYTES",
    "STR_SPACES",
    "Block",
    "map_mss_block",
    "read_blocks",
    "strip_column",
    "write_csv",
]

BLOCK_BYTES = 4 * 1024 * 1024
# Python's str.strip() and the bytes the old reader took as blank (ASCII only).
STR_SPACES = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
# Characters Python's "\s" (str patterns) matches among ASCII: refused in addresses.
_ADDRESS_PART = r"[^@|\t\n\x0b\x0c\r\x1c-\x1f ]"
_ADDRESS = f"^{_ADDRESS_PART}+@{_ADDRESS_PART}+\\.[^@|.\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ]+$"


@dataclass
class Block:
    """A stretch of the file: plainly well-formed lines, the others set aside.

    ``lines`` holds the well-formed lines (in file order) as published
    (without the line end), whose digest is the row's ``row_hash``, and
    ``numbers`` their line numbers; :meth:`fields` splits (some of) them into
    one binary column per field of the layout, on demand, so that the lines of
    a re-import seen before are never split. ``odd`` lists the other lines as
    (number, bytes), bytes None for a line longer than the limit: the
    row-by-row path reads them. ``py_lines`` are the same lines as ``lines``,
    as Python bytes (the digests are computed on them: converting once here
    instead of again there). ``wide_spaces`` is False when no line of the block
    holds a non-ASCII whitespace character, so that stripping the fields needs
    no more than the ASCII kernel (:func:`strip_column`).
    """

    numbers: pa.Array
    lines: pa.Array
    odd: list[tuple[int, bytes | None]]
    width: int = 0
    clean: pa.Array | None = None
    py_lines: list[bytes] = dataclasses.field(default_factory=list)
    wide_spaces: bool = True

    def fields(self, mask: pa.Array | None = None) -> pa.RecordBatch:
        """The fields of the lines where ``mask`` is true (all lines without a mask)."""
        names = [f"f{index}" for index in range(self.width)]
        clean = self.clean if mask is None else pc.filter(self.clean, mask)
        if clean is None or not len(clean):
            return pa.RecordBatch.from_arrays(
                [pa.array([], pa.binary()) for _ in names], names=names
            )
        joined = pc.binary_join(
            pa.ListArray.from_arrays(pa.array([0, len(clean)], pa.int32()), clean), b"\n"
        )[0].as_buffer()
        fields = pa_csv.read_csv(
            pa.BufferReader(joined),
            read_options=pa_csv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(joined), 1) + 1
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter="|",
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.binary()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if fields.num_rows != len(clean):  # cannot happen with the checks of read_blocks
            raise ValueError(f"read {fields.num_rows} rows from {len(clean)} lines")
        columns = [column.combine_chunks() for column in fields.columns]
        return pa.RecordBatch.from_arrays(columns, names=names)

    def field(self, index: int, mask: pa.Array) -> pa.Array:
        """Field ``index`` of the lines where ``mask`` is true, without splitting the rest."""
        clean = pc.filter(self.clean, mask)
        parts = pc.split_pattern(clean, b"|", max_splits=index + 1)
        return pc.list_element(parts, index)


def _chunks(stream: IO[bytes], max_line: int) -> Iterator[tuple[bytes | None, int]]:
    """Blocks of whole lines as (bytes, lines in it); (None, 1) stands for one over-long line."""
    carry = b""
    while True:
        data = stream.read(BLOCK_BYTES)
        if not data:
            if carry:
                yield carry, 1
            return
        data = carry + data
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut], data.count(b"\n", 0, cut)
        if len(carry) > max_line:  # a line longer than the limit: skip to its end
            while True:
                rest = stream.readline(BLOCK_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            carry = b""
            yield None, 1


def read_blocks(
    stream: IO[bytes], layout: Layout, first_line: int, max_line: int, *, utf8: bool
) -> Iterator[Block]:
    """Read ``stream`` (positioned after the header) block by block.

    ``first_line`` is the number of the first line read. Lines of a file that
    is not UTF-8 (an old Windows code page) all go to the row-by-row path.

    The checks of a line's shape cost more than its split into fields did when
    they ran as kernels over every line (counting separators, looking for a
    lone ``\\r`` or a NUL: 1.6 s of CPU per million lines): a ``\\r`` or a NUL
    is first looked for in the whole block (one ``memchr``), and separators are
    counted by ``bytes.count`` over the lines as Python bytes, which the digests
    need anyway.
    """
    number = first_line
    expected = layout.width - 1
    for data, count in _chunks(stream, max_line):
        if data is None:
            no_lines = pa.array([], pa.binary())
            yield Block(pa.array([], pa.int64()), no_lines, [(number, None)], layout.width)
            number += count
            continue
        if data.endswith(b"\n"):
            data = data[:-1]
        lines = pc.split_pattern(pa.array([data], pa.binary()), b"\n").flatten()
        numbers = pa.array(range(number, number + count), pa.int64())
        number += count
        carriage = b"\r" in data
        if carriage:
            lines = pc.if_else(pc.ends_with(lines, "\r"), pc.binary_slice(lines, 0, -1), lines)
        py_lines: list[bytes] = lines.to_pylist()
        separators = list(map(bytes.count, py_lines, repeat(b"|")))
        good: pa.Array | None = None
        trailing: pa.Array | None = None
        if separators.count(expected) != len(separators):
            counted = pa.array(separators, pa.int32())
            trailing = pc.and_(pc.equal(counted, layout.width), pc.ends_with(lines, "|"))
            good = pc.or_(pc.equal(counted, expected), trailing)
        for check in _shape_checks(lines, data, max_line, carriage=carriage, utf8=utf8):
            good = check if good is None else pc.and_(good, check)
        odd: list[tuple[int, bytes | None]] = []
        if good is not None and not pc.all(good).as_py():
            odd_rows = pc.indices_nonzero(pc.invert(good))
            odd = [
                (line_number, raw if len(raw) <= max_line else None)
                for line_number, raw in zip(
                    pc.take(numbers, odd_rows).to_pylist(),
                    pc.take(lines, odd_rows).to_pylist(),
                    strict=True,
                )
            ]
            lines, numbers = pc.filter(lines, good), pc.filter(numbers, good)
            py_lines = [raw for raw, kept in zip(py_lines, good.to_pylist(), strict=True) if kept]
            if trailing is not None:
                trailing = pc.filter(trailing, good)
        clean = lines
        if trailing is not None and pc.any(trailing).as_py():
            clean = pc.if_else(trailing, pc.binary_slice(lines, 0, -1), lines)
        wide = any(lead in data for lead in _WIDE_SPACE_LEADS)
        yield Block(numbers, lines, odd, layout.width, clean, py_lines, wide)


# The lead bytes of the UTF-8 encodings of the non-ASCII characters that Python's
# str.isspace() accepts (U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029,
# U+202F, U+205F, U+3000): a block holding none of them has no value that
# str.strip() would strip beyond ASCII. (One byte each: a search for one byte
# is a memchr, for a longer needle it cost 4 ms per block.)
_WIDE_SPACE_LEADS = b"\xc2\xe1\xe2\xe3"


def _shape_checks(
    lines: pa.Array, data: bytes, max_line: int, *, carriage: bool, utf8: bool
) -> Iterator[pa.Array]:
    """Masks of the lines that pass each check a plainly well-formed line must pass.

    Only the checks the block needs: none for a ``\\r`` or a NUL the block
    does not hold at all.
    """
    if len(data) > max_line:
        yield pc.less_equal(pc.binary_length(lines), max_line)
    # A lone "\r" would end a line for the CSV reader; a NUL is refused.
    if carriage and data.count(b"\r") != data.count(b"\r\n"):
        yield pc.invert(pc.match_substring(lines, "\r"))
    if b"\x00" in data:
        yield pc.invert(pc.match_substring(lines, "\x00"))
    # Lines of a file in a Windows code page all take the row-by-row path.
    yield _utf8_valid(lines) if utf8 else pa.array([False] * len(lines))


def _utf8_valid(lines: pa.Array) -> pa.Array:
    try:
        pc.cast(lines, pa.string())
    except pa.ArrowInvalid:
        return pa.array([_decodes(raw) for raw in lines.to_pylist()], pa.bool_())
    return pa.array([True] * len(lines), pa.bool_())


def _decodes(raw: bytes | None) -> bool:
    try:
        (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- helpers over columns ---------------------------------------------------------


def _per_distinct(values: pa.Array, function: Callable[[Any], Any], kind: pa.DataType) -> pa.Array:
    """``function`` applied once per distinct value (nulls included), spread over the rows."""
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    results = pa.array([function(value) for value in encoded.dictionary.to_pylist()], kind)
    return pc.take(results, encoded.indices)


def _patch(
    values: pa.Array,
    mask: pa.Array,
    function: Callable[[Any], Any],
    source: pa.Array | None = None,
) -> pa.Array:
    """``values`` with the rows of ``mask`` replaced by ``function`` of ``source``'s value.

    ``source`` defaults to ``values``; ``function`` runs once per distinct value.
    """
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return values
    chosen = pc.filter(values if source is None else source, mask)
    return pc.replace_with_mask(values, mask, _per_distinct(chosen, function, values.type))


# Python's str.isspace() beyond ASCII: the Unicode separators (Z*) and NEL.
_UNICODE_SPACE_AT_ENDS = r"^[\p{Z}\x{85}]|[\p{Z}\x{85}]$"


def strip_column(column: pa.Array, *, wide_spaces: bool = True) -> pa.Array:
    """``value.strip() or None`` of every value (a binary column of valid UTF-8).

    The column is taken as text as it is (a view, not a cast that would check
    the UTF-8 again: the lines were checked whole). ``wide_spaces=False`` says
    that no value holds a non-ASCII whitespace character (see :class:`Block`).
    """
    return _strip_text(column.view(pa.string()), wide_spaces=wide_spaces)


def _strip_text(text: pa.Array, *, wide_spaces: bool = True) -> pa.Array:
    """``value.strip() or None``: the kernel trims Python's ASCII whitespace, and the rare
    value that still starts or ends with Unicode whitespace is stripped by Python itself."""
    stripped = pc.ascii_trim(text, STR_SPACES)
    if wide_spaces:
        wide = pc.invert(pc.fill_null(pc.string_is_ascii(stripped), True))
        if pc.any(wide).as_py():
            ends = pc.match_substring_regex(pc.filter(stripped, wide), _UNICODE_SPACE_AT_ENDS)
            stripped = _patch(
                stripped,
                pc.replace_with_mask(wide, wide, ends),
                lambda value: value.strip(),
            )
    return _empty_to_null(stripped)


def _empty_to_null(text: pa.Array) -> pa.Array:
    """The empty values as None: the same offsets and data with a new validity bitmap.

    (``if_else`` would copy every value of every field of every line.)
    """
    kept = pc.fill_null(pc.not_equal(pc.binary_length(text), 0), False)
    buffers = text.buffers()
    if text.offset or kept.offset or len(buffers) != 3:  # not a plain array: the kernel
        return pc.if_else(kept, text, None)
    return pa.Array.from_buffers(text.type, len(text), [kept.buffers()[1], buffers[1], buffers[2]])


def _on_distinct(values: pa.Array, kernel: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """``kernel`` (column to column) run on the distinct values only, spread over the rows."""
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return pc.take(kernel(encoded.dictionary), encoded.indices)


def _fold(column: pa.Array) -> pa.Array:
    """:func:`fold` of every value ('' for None), computed once per distinct value."""
    return _on_distinct(column, _fold_values)


# Values of these characters only (ASCII and the Latin-1 letters that decompose
# into an ASCII letter and combining marks) fold with kernels: lower case, NFKD,
# marks dropped, then as ASCII. Others (œ, ß, æ, ø, ð, þ, other scripts) go
# through fold() itself.
_LATIN_DECOMPOSABLE = (
    "^[\\x{00}-\\x{7F}\\x{C0}-\\x{C5}\\x{C7}-\\x{CF}\\x{D1}-\\x{D6}\\x{D9}-\\x{DD}"
    "\\x{E0}-\\x{E5}\\x{E7}-\\x{EF}\\x{F1}-\\x{F6}\\x{F9}-\\x{FD}\\x{FF}]*$"
)
_COMBINING_MARKS = "[\\x{300}-\\x{36F}]+"


def _fold_values(column: pa.Array) -> pa.Array:
    """:func:`fold` of every value: kernels for ASCII and accented Latin letters, Python else.

    For ASCII, ``fold`` lower-cases and turns every run of non-alphanumerics
    into one space, trimmed: the same three kernels here. An accented French
    name (é, è, ç, ï...) first loses its accents by kernels too (NFKD, marks
    dropped), as ``fold`` does; folding them in Python was 1.4 s of CPU per
    million lines.
    """
    text = pc.fill_null(column, "")
    ascii_ = pc.string_is_ascii(text)
    latin = pc.and_(pc.invert(ascii_), pc.match_substring_regex(text, _LATIN_DECOMPOSABLE))
    if pc.any(latin).as_py():
        bare = pc.replace_substring_regex(
            pc.utf8_normalize(pc.utf8_lower(pc.filter(text, latin)), "NFKD"), _COMBINING_MARKS, ""
        )
        text = pc.replace_with_mask(text, latin, bare)
        ascii_ = pc.or_(ascii_, latin)
    folded = pc.ascii_lower(text)
    # A value of one word (letters and digits only) is folded once lower-cased.
    worded = pc.invert(pc.fill_null(pc.ascii_is_alnum(folded), False))
    if pc.any(worded).as_py():
        spaced = pc.replace_substring_regex(pc.filter(folded, worded), "[^a-z0-9]+", " ")
        folded = pc.replace_with_mask(folded, worded, pc.ascii_trim(spaced, " "))
    return _patch(folded, pc.invert(ascii_), fold, text)


def _join(separator: str, *parts: pa.Array) -> pa.Array:
    """Join the non-null parts with ``separator``; None when every part is null.

    (Built pair by pair: ``binary_join_element_wise`` with ``null_handling="skip"``
    drops the rows whose parts are all null in pyarrow 26.)
    """
    joined = parts[0]
    for part in parts[1:]:
        both = pc.binary_join_element_wise(joined, part, separator)
        joined = pc.if_else(pc.is_null(joined), part, pc.if_else(pc.is_null(part), joined, both))
    return joined


def _join_words(*parts: pa.Array) -> pa.Array:
    """Join non-empty folded keys with a space ('' when all are empty)."""
    nullable = [pc.if_else(pc.equal(pc.binary_length(part), 0), None, part) for part in parts]
    return pc.fill_null(_join(" ", *nullable), "")


def _luhn(ids: pa.Array, length: int) -> pa.Array:
    """Luhn validity of ``ids``, which are all ``length`` decimal digits.

    On the number as an integer (digits by division), not on ``length``
    slices of the text: a third of the cost.
    """
    number = pc.cast(ids, pa.int64())
    total: pa.Array | None = None
    for position in range(length):  # from the right: the key, then every other digit doubled
        quotient = pc.divide(number, 10)
        digit = pc.subtract(number, pc.multiply(quotient, 10))
        number = quotient
        if position % 2:  # doubled: 2d, minus 9 when over 9
            digit = pc.subtract(
                pc.multiply(digit, 2), pc.multiply(pc.cast(pc.greater(digit, 4), pa.int64()), 9)
            )
        total = digit if total is None else pc.add(total, digit)
    assert total is not None
    return pc.equal(pc.subtract(total, pc.multiply(pc.divide(total, 10), 10)), 0)


def _digits(values: pa.Array, length: int) -> pa.Array:
    """True where the value is exactly ``length`` ASCII digits (False for null)."""
    return pc.fill_null(pc.match_substring_regex(values, f"^[0-9]{{{length}}}$"), False)


def _valid_id(values: pa.Array, length: int) -> pa.Array:
    """``length`` digits and a right Luhn key (False for null or any other shape)."""
    shaped = _digits(values, length)
    safe = pc.if_else(shaped, values, "0" * length)
    return pc.and_(shaped, _luhn(safe, length))


def _is(values: pa.Array, wanted: str) -> pa.Array:
    return pc.fill_null(pc.equal(values, wanted), False)


def _pharmacy_said(names: pa.Array) -> pa.Array:
    """What each name says (:func:`formats.pharmacy_hint`): 1 pharmacy, -1 hospital one, 0."""
    return _on_distinct(names, _pharmacy_said_values)


def _pharmacy_said_values(names: pa.Array) -> pa.Array:
    padded = pc.binary_join_element_wise(" ", _fold_values(names), " ", "")
    hospital = pc.match_substring_regex(padded, f" ({'|'.join(NOT_PHARMACY_WORDS)}) ")
    pharmacy = pc.match_substring_regex(padded, f" ({'|'.join(PHARMACY_WORDS)}) ")
    return pc.if_else(hospital, -1, pc.if_else(pharmacy, 1, 0))


def _department(department: pa.Array, postal_code: pa.Array) -> pa.Array:
    """:func:`formats.department_of`: as published when it is one, else from the postal code."""
    upper = pc.ascii_upper(department)
    published = pc.and_(
        pc.fill_null(pc.string_is_ascii(department), False),
        pc.fill_null(pc.match_substring_regex(upper, "^([0-9]{2,3}|2[AB])$"), False),
    )
    shaped = pc.fill_null(pc.match_substring_regex(postal_code, "^[0-9]{5}$"), False)
    overseas = pc.or_(pc.starts_with(postal_code, "97"), pc.starts_with(postal_code, "98"))
    corsica = pc.if_else(pc.less(postal_code, "20200"), "2A", "2B")
    derived = pc.if_else(
        pc.fill_null(overseas, False),
        pc.utf8_slice_codeunits(postal_code, 0, 3),
        pc.if_else(
            pc.fill_null(pc.starts_with(postal_code, "20"), False),
            corsica,
            pc.utf8_slice_codeunits(postal_code, 0, 2),
        ),
    )
    return pc.if_else(
        published, upper, pc.if_else(shaped, derived, pa.nulls(len(postal_code), pa.string()))
    )


def _city(routing: pa.Array, postal_code: pa.Array) -> pa.Array:
    """:func:`formats.city_from_routing`: the routing line without its leading postal code."""
    five = pc.fill_null(pc.equal(pc.utf8_length(postal_code), 5), False)
    led = pc.fill_null(pc.equal(pc.utf8_slice_codeunits(routing, 0, 5), postal_code), False)
    rest = _strip_text(pc.utf8_slice_codeunits(routing, 5, 1 << 30))
    city = pc.if_else(pc.and_(five, led), rest, routing)
    # Postal codes of another length: the Python function, once per distinct pair.
    other = pc.and_(pc.and_(pc.invert(five), pc.is_valid(postal_code)), pc.is_valid(routing))
    if not pc.any(other).as_py():
        return city
    pairs = _pairwise(pc.filter(routing, other), pc.filter(postal_code, other), city_from_routing)
    return pc.replace_with_mask(city, other, pairs)


# --- the mailbox extraction, a block at a time ---------------------------------------

_MSS_TEXT = (
    "service",
    "civility",
    "family_name",
    "given_name",
    "profession_code",
    "profession_label",
    "category_code",
    "category_label",
    "speciality_code",
    "speciality_label",
    "organisation_name",
    "trade_name",
    "postal_code",
    "country",
    "dematerialisation",
)


def map_mss_block(
    raw: dict[str, pa.Array],
    hosted: frozenset[str],
    limits: dict[str, int],
) -> tuple[dict[str, pa.Array], pa.Array]:
    """Map stripped ``Extraction_Correspondance_MSSante`` fields, a column at a time.

    ``raw`` holds one string column per known field (stripped, None when
    empty). Returns the directory columns (as :func:`map_mss_row` would give
    them) and a mask of the rows this mapping does not vouch for: those are
    mapped again, one by one, by the row mapper, which refuses them or maps
    them (all refusals and rarer shapes go that way).
    """
    rows = len(raw["address"])
    null = pa.nulls(rows, pa.string())

    def get(name: str) -> pa.Array:
        return raw.get(name, null)

    unsure = pc.invert(pc.fill_null(pc.string_is_ascii(get("bal_type")), False))
    bal_type = pc.ascii_upper(get("bal_type"))
    unsure = pc.or_(unsure, pc.invert(pc.fill_null(pc.is_in(bal_type, pa.array(BAL_TYPES)), False)))
    address = get("address")
    address_ok = pc.and_(
        pc.fill_null(pc.string_is_ascii(address), False),
        pc.fill_null(pc.less_equal(pc.utf8_length(address), 254), False),
    )
    address = pc.ascii_lower(address)
    shaped = pc.fill_null(pc.match_substring_regex(address, _ADDRESS), False)
    address_ok = pc.and_(address_ok, shaped)
    unsure = pc.or_(unsure, pc.invert(address_ok))

    # Structure id: FINESS (type 1) or SIRET (type 3) checked for shape, others as published.
    structure_type = get("structure_id_type")
    published = get("structure_id")
    is_finess = pc.and_(_is(structure_type, "1"), pc.is_valid(published))
    is_siret = pc.and_(_is(structure_type, "3"), pc.is_valid(published))
    finess_bare = pc.if_else(
        pc.and_(pc.equal(pc.utf8_length(published), 10), pc.starts_with(published, "1")),
        pc.utf8_slice_codeunits(published, 1, 10),
        published,
    )
    siret_bare = pc.if_else(
        pc.and_(pc.equal(pc.utf8_length(published), 15), pc.starts_with(published, "3")),
        pc.utf8_slice_codeunits(published, 1, 15),
        published,
    )
    finess_ok = pc.fill_null(pc.match_substring_regex(finess_bare, "^[0-9A-Za-z]{9}$"), False)
    siret_ok = _digits(siret_bare, 14)
    unsure = pc.or_(unsure, pc.and_(is_finess, pc.invert(finess_ok)))
    unsure = pc.or_(unsure, pc.and_(is_siret, pc.invert(siret_ok)))
    structure_id = pc.if_else(
        is_finess,
        pc.binary_join_element_wise("1", pc.ascii_upper(finess_bare), ""),
        pc.if_else(is_siret, pc.binary_join_element_wise("3", siret_bare, ""), published),
    )
    structure_kind = pc.if_else(is_finess, "FINESS", pc.if_else(is_siret, "SIRET", null))

    # Practitioner id (PER, CAB): RPPS (type 8) or ADELI (type 0), Luhn, national id = prefix + id.
    person = pc.or_(_is(bal_type, "PER"), _is(bal_type, "CAB"))
    pp_id, pp_published = get("pp_id"), get("pp_national_id")
    has_pp = pc.and_(person, pc.or_(pc.is_valid(pp_id), pc.is_valid(pp_published)))
    pp_type = get("pp_id_type")
    rpps, adeli = _is(pp_type, "8"), _is(pp_type, "0")
    other_type = pc.and_(pc.invert(pc.or_(rpps, adeli)), pc.is_valid(pp_type))
    expected = pc.if_else(
        rpps,
        pc.binary_join_element_wise("8", pp_id, ""),
        pc.binary_join_element_wise("0", pp_id, ""),
    )
    same = pc.fill_null(pc.equal(pc.utf8_upper(pp_published), expected), False)
    matches = pc.or_(pc.is_null(pp_published), same)
    checked = pc.and_(
        pc.or_(
            pc.and_(rpps, _valid_id(pp_id, 11)),
            pc.and_(adeli, _valid_id(pp_id, 9)),
        ),
        matches,
    )
    # Any other practitioner case (unknown type, missing type or id, bad key) goes row by row.
    unsure = pc.or_(unsure, pc.and_(has_pp, pc.invert(pc.or_(checked, other_type))))
    unsure = pc.or_(unsure, pc.and_(_is(bal_type, "PER"), pc.invert(has_pp)))
    national_id = pc.if_else(
        has_pp,
        pc.if_else(other_type, pc.coalesce(pp_published, pp_id), expected),
        structure_id,
    )
    id_type = pc.if_else(
        has_pp,
        pc.if_else(other_type, null, pc.if_else(rpps, "RPPS", "ADELI")),
        pc.if_else(pc.is_valid(structure_id), structure_kind, null),
    )

    postal_code = get("postal_code")
    l6 = get("l6")
    columns: dict[str, pa.Array] = {name: get(name) for name in _MSS_TEXT}
    columns.update(
        {
            "bal_type": bal_type,
            "national_id": national_id,
            "id_type": id_type,
            "pp_identifier": pc.if_else(person, pp_id, null),
            "structure_id": structure_id,
            "address_lines": _join(
                "\n",
                get("l2"),
                get("l3"),
                _join(
                    " ",
                    get("l4_number"),
                    get("l4_repetition"),
                    get("l4_street_type"),
                    get("l4_street"),
                ),
                get("l5"),
                l6,
            ),
            "city": _city(l6, postal_code),
            "department": _department(get("department"), postal_code),
            "address": address,
            "domain": pc.replace_substring_regex(address, "^[^@]*@", ""),
        }
    )
    columns["hosted"] = pc.fill_null(
        pc.is_in(columns["domain"], pa.array(sorted(hosted), pa.string())), False
    )
    # Search keys (formats.search_keys), folding each distinct value once.
    organisation, trade_name = get("organisation_name"), get("trade_name")
    person_key = _join_words(_fold(get("family_name")), _fold(get("given_name")))
    organisation_or_trade = pc.coalesce(organisation, trade_name)
    folded_organisation = _fold(organisation_or_trade)
    organisation_kind = pc.or_(_is(bal_type, "ORG"), _is(bal_type, "APP"))
    by_organisation = pc.or_(organisation_kind, pc.equal(pc.binary_length(person_key), 0))
    organisation_name_key = _join_words(folded_organisation, _fold(get("service")))
    name_key = pc.if_else(
        by_organisation,
        pc.if_else(
            pc.equal(pc.binary_length(organisation_name_key), 0), person_key, organisation_name_key
        ),
        person_key,
    )
    name_key = pc.utf8_slice_codeunits(name_key, 0, 200)
    nameless = pc.equal(pc.binary_length(name_key), 0)
    if pc.any(nameless).as_py():  # a mailbox with no name at all sorts by its address
        address_key = _fold_values(pc.filter(address, nameless))
        name_key = pc.replace_with_mask(
            name_key, nameless, pc.utf8_slice_codeunits(address_key, 0, 200)
        )
    columns["name_key"] = name_key
    org_key = pc.utf8_slice_codeunits(folded_organisation, 0, 200)
    columns["org_key"] = pc.if_else(pc.equal(pc.binary_length(org_key), 0), null, org_key)
    by_name = _pharmacy_said(organisation)
    said = pc.if_else(pc.equal(by_name, 0), _pharmacy_said(trade_name), by_name)
    columns["pharmacy"] = pc.and_(
        _is(bal_type, "ORG"), pc.or_(_is(get("profession_code"), "21"), pc.equal(said, 1))
    )
    # Values copied from the file may exceed their column: the row mapper refuses them.
    for name, limit in limits.items():
        if name in columns:
            too_long = pc.fill_null(pc.greater(pc.utf8_length(columns[name]), limit), False)
            unsure = pc.or_(unsure, too_long)
    return columns, pc.fill_null(unsure, True)


def _pairwise(
    first: pa.Array, second: pa.Array, function: Callable[[str | None, str | None], str | None]
) -> pa.Array:
    """``function(first, second)`` once per distinct pair of values.

    The pair is keyed as ``first NUL second``: a NUL never reaches this path
    (such lines are refused row by row) and values are never empty (None instead).
    """
    pairs = pc.binary_join_element_wise(pc.fill_null(first, ""), pc.fill_null(second, ""), "\x00")

    def call(pair: str) -> str | None:
        a, _, b = pair.partition("\x00")
        return function(a or None, b or None)

    return _per_distinct(pairs, call, pa.string())


def write_csv(table: pa.Table) -> bytes:
    """The rows of ``table`` as CSV for PostgreSQL's ``COPY … (FORMAT csv)`` (empty = NULL)."""
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return buffer.getvalue()
