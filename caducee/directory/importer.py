"""Streaming import of the national extractions into the directory (K3 ``directory import``).

The mailbox extraction has about half a million lines and is published daily;
an import must run in bounded memory, be idempotent, report every refused line
with its number, and never let one bad line abort the rest. It works in two
steps over temporary *staging* tables on the import's own connection:

1. **Stage**: read the file block by block (``.txt``, or the ``.zip`` as
   published), a column at a time with pyarrow (:mod:`caducee.directory.columnar`:
   why pyarrow, and how the rejection report keeps its line numbers). Each
   line's digest is compared with the digests of the rows the last import
   stored: a line seen before only *claims* its key (a small row in
   ``directory_import_keys``); the other lines are mapped and checked (a column
   at a time; the few a block holds in a small change, and every line the
   columnar checks cannot vouch for, row by row by
   :mod:`caducee.directory.formats`, the reference) and, if good, written in
   full to ``directory_import_stage``. Writes are one per block: ``COPY`` (CSV
   written by pyarrow) on PostgreSQL, one ``executemany`` on SQLite. For big
   files the reading runs in a second process, so that reading and writing
   use two cores. Nothing in the directory has changed yet, so a file that
   cannot be read to the end changes nothing.
2. **Apply**, set-based against the staging tables: resolve duplicated keys,
   update the rows whose line changed (``UPDATE … FROM``), insert new ones
   (``INSERT … SELECT``), and, for a full import, delete the rows *of the same
   source kind* that the file no longer lists (``DELETE … WHERE NOT EXISTS``).
   PostgreSQL applies the whole file at once (its readers never wait);
   SQLite applies it in batches of ``batch_size`` keys, one short transaction
   each, so that the gateway keeps delivering mail between batches; the scans
   over the whole file (keys claimed twice, rows it no longer lists, counts)
   are plain reads that never take SQLite's write lock (:func:`_read`). A first
   load into a (nearly) empty table builds the search indexes once, after the
   rows, instead of updating them row by row (see :func:`_apply_postgresql`
   and :func:`_bulk_apply`). On PostgreSQL, a first load into an empty table
   skips most of the staging: the rows go by ``COPY`` into a new table, which
   takes the empty one's place at the end (:func:`_first_load`).

A row's ``row_hash`` is the digest of its line as published (plus a version of
the mapping rules), so that the daily re-import of an unchanged file maps and
writes almost nothing. Duplicated keys (the mailbox extraction repeats some
addresses) are resolved independently of line order: the line with the
smallest digest is kept, the others are reported as duplicates with the line
that was kept, so re-importing a reordered file changes nothing. A refused line
still claims its key, so an entry is never removed because today's line for
it was malformed. Locally set flags (red list, hosted, pharmacy) survive
re-imports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import DBAPIError

from caducee.directory.columnar import (
    STR_SPACES,
    Block,
    map_mss_block,
    read_blocks,
    strip_column,
    write_csv,
)
from caducee.directory.formats import (
    KEY_FIELDS,
    MAPPERS,
    FormatError,
    Layout,
    RowError,
    SourceKind,
    layout_signature,
    line_key,
    read_header,
    row_key,
    split_row,
)
from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.storage.db import Database, UtcDateTime, utcnow

__all__ = [
    "DirectoryImportError",
    "Duplicate",
    "ImportMode",
    "ImportSummary",
    "Rejection",
    "import_file",
    "layout_salt",
    "line_digest",
    "open_extraction",
]

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
DEFAULT_BATCH_SIZE = 5000
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
STAGE_TABLE = "directory_import_stage"
KEYS_TABLE = "directory_import_keys"
# A load that adds rows to a table holding fewer than BULK_RATIO times as many
# (and at least BULK_MIN_ROWS rows) rebuilds the indexes instead of updating them.
BULK_RATIO = 0.5
BULK_MIN_ROWS = 20_000
# Rows per transaction of a bulk load on SQLite (inserted in key order, few indexes).
BULK_BATCH_SIZE = 50_000
# A first load into an empty table (PostgreSQL) from a file this big writes rows
# straight to the table (about 20,000 lines of the mailbox extraction).
DIRECT_MIN_BYTES = 4 * 1024 * 1024
# ... into a table holding at most this many rows, none of them from that file.
DIRECT_MAX_EXISTING = 10_000
# Page cache of the import's SQLite connection while it runs (the default is 2 MiB).
SQLITE_CACHE_KIB = 32 * 1024
SQLITE_SORT_THREADS = 2
PG_TEMP_BUFFERS = "128MB"
# Part of every line digest: change it when the mapping of a line changes, so
# that the next import maps every line again instead of trusting stored rows.
MAPPING_VERSION = b"caducee-dir-1"


def layout_salt(layout: Layout) -> bytes:
    """The salt of the line digests of a file: its header's layout and the mapping version.

    A line that reads differently (columns moved, mapping rules changed) must
    not look like the stored one even if its bytes are the same.
    """
    return hashlib.blake2b(
        layout_signature(layout), digest_size=16, person=MAPPING_VERSION
    ).digest()


def line_digest(line: bytes, salt: bytes) -> bytes:
    """The digest of a line as published (without its line end), stored as ``row_hash``."""
    return hashlib.blake2b(line, digest_size=16, salt=salt).digest()


class ImportMode(StrEnum):
    """How an import treats rows the file does not list.

    ``full``: the file is the whole source, rows it lacks are removed;
    ``merge``: adds and updates only (a partial file).
    """

    FULL = "full"
    MERGE = "merge"


class DirectoryImportError(Exception):
    """The import cannot be done (unreadable file, unknown format, refused removal)."""


@dataclass(frozen=True)
class Rejection:
    """A refused line: its number in the file (the header is line 1) and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class Duplicate:
    """A line whose key an earlier-kept line already has; ``kept_line`` is the one imported."""

    line: int
    key: str
    kept_line: int


class ImportCancelled(Exception):
    """The operator declined the removals a full import would make; nothing changed."""


RemovalCheck = Callable[[int, int], bool]
"""``(would_remove, existing) -> proceed?``, asked before a full import removes rows."""


@dataclass
class ImportSummary:
    """What an import did. ``read`` = added + changed + unchanged + rejected + duplicates."""

    source: SourceKind
    file: str
    mode: ImportMode
    read: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_lines: list[Duplicate] = field(default_factory=list)
    unknown_columns: tuple[str, ...] = ()
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for ``--json`` and logs."""
        return {
            "source": str(self.source),
            "file": self.file,
            "mode": str(self.mode),
            "read": self.read,
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "rejections": [{"line": r.line, "reason": r.reason} for r in self.rejections],
            "duplicate_lines": [
                {"line": d.line, "key": d.key, "kept_line": d.kept_line}
                for d in self.duplicate_lines
            ],
            "unknown_columns": list(self.unknown_columns),
            "seconds": round(self.seconds, 3),
            "phases": dict(self.phases),
        }


# --- reading the file ----------------------------------------------------------

_MEMBER_HINTS = ("personne_activite", "extraction_correspondance_mssante")


def _pick_member(archive: zipfile.ZipFile, path: Path) -> str:
    texts = [
        info.filename
        for info in archive.infolist()
        if not info.is_dir() and info.filename.lower().endswith(".txt")
    ]
    if len(texts) == 1:
        return texts[0]
    hinted = [name for name in texts if any(hint in name.lower() for hint in _MEMBER_HINTS)]
    if len(hinted) == 1:
        return hinted[0]
    if not texts:
        raise DirectoryImportError(f"{path}: the archive holds no .txt file")
    raise DirectoryImportError(
        f"{path}: cannot tell which file of the archive to import: {', '.join(sorted(texts))}"
    )


@contextmanager
def open_extraction(path: Path) -> Iterator[IO[bytes]]:
    """Open an extraction as a binary stream: the file itself, or the right member of a zip.

    A ``PS_LibreAcces`` zip holds several files; the ``Personne_activite`` one is
    taken. Nothing is decompressed to disk or to memory as a whole.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = _pick_member(archive, path)
                with archive.open(member) as stream:
                    yield stream
        else:
            with path.open("rb") as stream:
                yield stream
    except OSError as error:
        raise DirectoryImportError(f"{path}: {error.strerror or error}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DirectoryImportError(f"{path}: damaged zip archive: {error}") from None


def _read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes without the line end), or None for an over-long line."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the line
                line = stream.readline(MAX_LINE_BYTES + 1)
            yield number, None
            continue
        yield number, line.rstrip(b"\r\n")


# --- staging -------------------------------------------------------------------

# --- staging -------------------------------------------------------------------

_NOT_STAGED = frozenset({"id", "source", "red_list", "created_at", "updated_at"})
# Columns whose value is the file's, unchanged (the others are computed and bounded).
_FROM_FILE = frozenset(
    {
        "address",
        "national_id",
        "pp_identifier",
        "civility",
        "profession_code",
        "category_code",
        "speciality_code",
        "structure_id",
        "postal_code",
        "dematerialisation",
        "siret",
        "finess",
    }
)


@dataclass(frozen=True)
class _Target:
    """The table a kind of file feeds, and its key column."""

    table: Table
    key: str
    kind: SourceKind


def _target(kind: SourceKind) -> _Target:
    if kind is SourceKind.MSS_EXTRACTION:
        return _Target(cast(Table, DirectoryEntry.__table__), "address", kind)
    return _Target(cast(Table, Practitioner.__table__), "activity_key", kind)


def _stage_table(target: _Target) -> Table:
    """Full rows of the lines to apply (new or changed), with their line number."""
    columns: list[Column[Any]] = [
        Column("line_no", Integer, primary_key=True, autoincrement=False),
        Column("rejected", Boolean, nullable=False),
    ]
    columns += [
        Column(column.name, column.type, nullable=True)
        for column in target.table.columns
        if column.name not in _NOT_STAGED
    ]
    return Table(STAGE_TABLE, MetaData(), *columns, prefixes=["TEMPORARY"])


def _keys_table(target: _Target) -> Table:
    """Every key the file claims: lines to apply, lines seen before, refused lines."""
    return Table(
        KEYS_TABLE,
        MetaData(),
        Column("line_no", Integer, primary_key=True, autoincrement=False),
        Column(target.key, target.table.c[target.key].type, nullable=True),
        Column("row_hash", String(32), nullable=True),
        Column("rejected", Boolean, nullable=False),
        Column("known", Boolean, nullable=False),
        # A line written straight to the directory by a first load (see _FirstSeen).
        Column("direct", Boolean, nullable=False),
        prefixes=["TEMPORARY"],
    )


def _length_limits(table: Table) -> dict[str, int]:
    limits: dict[str, int] = {}
    for column in table.columns:
        length = getattr(column.type, "length", None)
        if isinstance(column.type, String) and isinstance(length, int):
            limits[column.name] = length
    return limits


class _Stager:
    """Writes batches of rows (tuples in column order) to a staging table."""

    def __init__(self, connection: Connection, table: Table) -> None:
        self.connection = connection
        self.table = table
        self.names = [column.name for column in table.columns]
        self.postgres = connection.dialect.name == "postgresql"
        # The SQLite dialect renders positional "?" markers in column order.
        self._insert_sql = str(insert(table).compile(dialect=connection.dialect))

    def write_table(self, table: pa.Table | None) -> None:
        """Write rows given as columns (named as the staging table's)."""
        if table is None or not table.num_rows:
            return
        table = table.select(self.names)
        columns = ", ".join(f'"{name}"' for name in self.names)
        if self.postgres:
            driver = self.connection.connection.driver_connection
            assert driver is not None
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {self.table.name} ({columns}) FROM STDIN (FORMAT csv)") as copy,
            ):
                copy.write(write_csv(table))
        else:
            values = zip(*(column.to_pylist() for column in table.columns), strict=True)
            self._sqlite_insert(list(values))

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.postgres:
            driver = self.connection.connection.driver_connection
            assert driver is not None
            columns = ", ".join(f'"{name}"' for name in self.names)
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {self.table.name} ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        else:
            self._sqlite_insert(rows)

    def _sqlite_insert(self, rows: list[tuple[Any, ...]]) -> None:
        # Straight to the driver: tuples, no per-row statement compilation, and
        # inside the driver-level transaction that _stage_file opened.
        driver = self.connection.connection.driver_connection
        assert driver is not None
        driver.executemany(self._insert_sql, rows)


# --- parsing: a Layout, then batches of rows ------------------------------------


@dataclass
class _Batch:
    """What a stretch of the file gives: full rows, key claims, refusals.

    Rows and claims come as tuples (row by row) and as columns (``table``,
    ``claims_table``, in the staging tables' column names), both to be staged;
    on a first load, ``direct_table`` holds the rows that go straight to the
    directory (same columns as ``table``, split off by :class:`_FirstSeen`).
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    claims: list[tuple[Any, ...]] = field(default_factory=list)
    table: pa.Table | None = None
    claims_table: pa.Table | None = None
    direct_table: pa.Table | None = None
    rejections: list[Rejection] = field(default_factory=list)
    rejected: int = 0
    read: int = 0


def _header(lines: Iterator[tuple[int, bytes | None]], path: Path) -> tuple[Layout, str, int]:
    """The file's layout, its encoding and the number of its header line."""
    for number, raw in lines:
        if raw is None:
            raise DirectoryImportError(
                f"{path}: the header line is longer than {MAX_LINE_BYTES} bytes"
            )
        if not raw.strip():
            continue
        try:
            text, encoding = raw.decode("utf-8-sig"), "utf-8"
        except UnicodeDecodeError:
            # Older PS_LibreAcces files were published in a Windows code page.
            text, encoding = raw.decode("cp1252", errors="replace"), "cp1252"
        try:
            return read_header(text), encoding, number
        except FormatError as error:
            raise DirectoryImportError(f"{path}: {error}") from None
    raise DirectoryImportError(f"{path}: empty file")


def _is_known(known: array[int] | None, digest: bytes) -> bool:
    if not known:
        return False
    prefix = int.from_bytes(digest[:8], "big")
    index = bisect_left(known, prefix)
    return index < len(known) and known[index] == prefix


def _seen(known: array[int] | None, digests: list[bytes]) -> pa.Array:
    """For each digest, whether a stored row has it (by its first 8 bytes)."""
    if not known:  # a first import: nothing is stored
        return pa.array([False] * len(digests), pa.bool_())
    size = len(known)
    flags: list[bool] = []
    for digest in digests:
        prefix = int.from_bytes(digest[:8], "big")
        index = bisect_left(known, prefix)
        flags.append(index < size and known[index] == prefix)
    return pa.array(flags, pa.bool_())


def _hex_column(digests: list[bytes]) -> pa.Array:
    """The digests in hex (``row_hash``), as one string column built from one buffer."""
    if not digests:
        return pa.array([], pa.string())
    text = b"".join(digests).hex().encode("ascii")
    width = 2 * len(digests[0])
    offsets = pa.array(range(0, width * len(digests) + 1, width), pa.int32())
    return pa.Array.from_buffers(
        pa.string(), len(digests), [None, offsets.buffers()[1], pa.py_buffer(text)]
    )


def _parse(
    path: Path,
    expected: SourceKind | None,
    hosted: frozenset[str],
    batch_size: int,
    max_details: int,
    known: array[int] | None,
) -> Generator[Layout | _Batch]:
    """Read and check the file: yields its :class:`Layout`, then one batch per block of lines.

    ``known`` holds the sorted first 8 bytes of the digests of the rows stored
    by earlier imports: a line with such a digest is unchanged and only claims
    its key. Pure computation on the file, no database: it can run in another
    process. The blocks are read and checked a column at a time
    (:mod:`caducee.directory.columnar`); the lines that path does not vouch
    for, and the few lines of a small change, go through :class:`_RowPath`.
    """
    del batch_size  # a batch is a block of lines (a few MiB), whatever the apply's batch size
    with open_extraction(path) as stream:
        lines = _read_lines(stream)
        layout, encoding, header_line = _header(lines, path)
        if expected is not None and layout.kind is not expected:
            raise DirectoryImportError(f"{path}: this is a {layout.kind} file, not {expected}")
        yield layout
        rows = _RowPath(layout, encoding, hosted, max_details, known)
        salt = rows.salt
        for block in read_blocks(
            stream, layout, header_line + 1, MAX_LINE_BYTES, utf8=encoding == "utf-8"
        ):
            batch = rows.batch = _Batch()
            slow: list[tuple[int, bytes | None, bytes | None]] = [
                (number, raw, None) for number, raw in block.odd
            ]
            count = len(block.lines)
            if count:
                batch.read += count
                digests = _digests(block.py_lines, salt)
                seen = _seen(known, digests)
                hexes = _hex_column(digests)
                keys = _block_keys(layout, block, seen)
                claimed = pc.and_(seen, pc.is_valid(keys))
                if pc.any(claimed).as_py():
                    batch.claims_table = pa.table(
                        {
                            "line_no": pc.filter(block.numbers, claimed),
                            rows.key: pc.filter(keys, claimed),
                            "row_hash": pc.filter(hexes, claimed),
                            "rejected": pa.array([False] * pc.sum(claimed).as_py(), pa.bool_()),
                            "known": pa.array([True] * pc.sum(claimed).as_py(), pa.bool_()),
                            "direct": pa.array([False] * pc.sum(claimed).as_py(), pa.bool_()),
                        }
                    )
                fresh = pc.invert(claimed)
                unsure = fresh
                if (
                    layout.kind is SourceKind.MSS_EXTRACTION
                    and (pc.sum(fresh).as_py() or 0) >= COLUMNAR_MIN_ROWS
                ):
                    batch.table, unsure = _map_block(rows, block, fresh, hexes)
                indices = pc.indices_nonzero(unsure).to_pylist()
                if indices:
                    taken = pa.array(indices, pa.int64())
                    slow += zip(
                        pc.take(block.numbers, taken).to_pylist(),
                        pc.take(block.lines, taken).to_pylist(),
                        [digests[index] for index in indices],
                        strict=True,
                    )
            slow.sort(key=itemgetter(0))
            for number, raw, digest in slow:
                rows.line(number, raw, digest)
            yield batch


def _digests(lines: list[bytes], salt: bytes) -> list[bytes]:
    """:func:`line_digest` of each line; copying a salted hasher costs less than making one."""
    salted = hashlib.blake2b(digest_size=16, salt=salt)
    digests: list[bytes] = []
    append = digests.append
    for line in lines:
        hasher = salted.copy()
        hasher.update(line)
        append(hasher.digest())
    return digests


COLUMNAR_MIN_ROWS = 64
"""Fewer new or changed lines than this in a block are mapped row by row (cheaper)."""

FIRST_SEEN_BITS = 1 << 28
"""Bits of :class:`_FirstSeen`'s map (32 MiB): 0.4 % false repeats at a million keys."""


class _FirstSeen:
    """On a first load, tells the rows that can go straight to the directory from the others.

    The loaded table gets its unique key constraint once filled, and which
    line of a repeated key is kept is only known once the whole file is read
    (the smallest digest wins). So a row goes straight to the table only
    if no earlier row of the file had its key; a repeated key's later lines
    are staged and the duplicate step decides between them exactly, with the
    direct row's claim (in the keys table, ``direct``) as one of the
    candidates. "Had its key" is a bit per hash of the key: a false repeat
    (two keys on one bit, under 0.4 % of the rows at a million) only sends a row
    down the staged path, which gives the same result; a map of bits, not a
    set of keys, keeps memory bounded (32 MiB). It runs in the importing
    process, which mostly waits for the ``COPY`` of the block before, not in
    the parsing process, whose work bounds the stage (measured: 1.1 s of CPU
    per million rows).
    """

    def __init__(self) -> None:
        self.bits = bytearray(FIRST_SEEN_BITS // 8)

    def add(self, keys: Iterable[str]) -> None:
        """Mark ``keys`` as seen: the keys of rows the table already has."""
        bits, mask = self.bits, FIRST_SEEN_BITS - 1
        for value in keys:
            slot = hash(value) & mask
            bits[slot >> 3] |= 1 << (slot & 7)

    def split(self, batch: _Batch, key: str) -> None:
        """Move the batch's mapped rows with a first-seen key to ``direct_table``."""
        table = batch.table
        if table is None or not table.num_rows:
            return
        bits, mask = self.bits, FIRST_SEEN_BITS - 1
        first: list[bool] = []
        for value in table.column(key).to_pylist():
            if value is None:
                first.append(False)
                continue
            slot = hash(value) & mask
            byte, bit = slot >> 3, 1 << (slot & 7)
            if bits[byte] & bit:
                first.append(False)
            else:
                bits[byte] |= bit
                first.append(True)
        chosen = pa.array(first, pa.bool_())
        direct = table.filter(chosen)
        batch.table = table.filter(pc.invert(chosen))
        batch.direct_table = direct
        count = direct.num_rows
        claims = pa.table(
            {
                "line_no": direct.column("line_no"),
                key: direct.column(key),
                "row_hash": direct.column("row_hash"),
                "rejected": pa.array([False] * count, pa.bool_()),
                "known": pa.array([False] * count, pa.bool_()),
                "direct": pa.array([True] * count, pa.bool_()),
            }
        )
        if batch.claims_table is not None:
            claims = pa.concat_tables([batch.claims_table.select(claims.column_names), claims])
        batch.claims_table = claims


def _block_keys(layout: Layout, block: Block, seen: pa.Array) -> pa.Array:
    """The key each known line claims (its address, or its activity key); None elsewhere."""
    if not pc.any(seen).as_py():
        return pa.nulls(len(seen), pa.string())
    if layout.kind is SourceKind.MSS_EXTRACTION:
        # Only the address field of each known line is split out.
        address = pc.cast(block.field(layout.positions["address"], seen), pa.string())
        if pc.all(pc.string_is_ascii(address)).as_py() is not False:
            address = pc.ascii_lower(pc.ascii_trim(address, STR_SPACES))
            address = pc.if_else(pc.equal(pc.binary_length(address), 0), None, address)
        else:
            address = pa.array(
                [(value or "").strip().lower() or None for value in address.to_pylist()],
                pa.string(),
            )
        return pc.replace_with_mask(pa.nulls(len(seen), pa.string()), seen, address)
    names = [name for name in KEY_FIELDS[layout.kind] if name in layout.positions]
    fields = block.fields(seen)
    columns = [
        pc.cast(fields.column(layout.positions[name]), pa.string()).to_pylist() for name in names
    ]
    keys: list[str | None] = []
    for values in zip(*columns, strict=True):
        raw = {name: value.strip() or None for name, value in zip(names, values, strict=True)}
        keys.append(row_key(layout.kind, raw))
    return pc.replace_with_mask(pa.nulls(len(seen), pa.string()), seen, pa.array(keys, pa.string()))


def _map_block(
    rows: _RowPath, block: Block, fresh: pa.Array, hexes: pa.Array
) -> tuple[pa.Table, pa.Array]:
    """Map the fresh lines of a block a column at a time; returns (staged rows, unsure mask)."""
    layout = rows.layout
    fields = block.fields(fresh)
    raw = {
        name: strip_column(fields.column(index), wide_spaces=block.wide_spaces)
        for name, index in layout.positions.items()
    }
    columns, unsure_fresh = map_mss_block(raw, rows.hosted, rows.checked)
    good = pc.invert(unsure_fresh)
    every = pc.all(fresh).as_py()  # a first load: every line is fresh
    columns["line_no"] = block.numbers if every else pc.filter(block.numbers, fresh)
    columns["row_hash"] = hexes if every else pc.filter(hexes, fresh)
    kept = pc.sum(good).as_py() or 0
    columns["rejected"] = pa.array([False] * kept, pa.bool_())
    # Usually every line is vouched for: nothing to filter out then.
    whole = kept == len(good)
    table = pa.table(
        {
            name: (columns[name] if whole or name == "rejected" else pc.filter(columns[name], good))
            for name in rows.names
        }
    )
    # Spread the unsure flags of the fresh lines back over the whole block.
    positions = pc.indices_nonzero(fresh)
    unsure_rows = pc.take(positions, pc.indices_nonzero(unsure_fresh)).to_pylist()
    flags = [False] * len(fresh)
    for index in unsure_rows:
        flags[index] = True
    return table, pa.array(flags, pa.bool_())


class _RowPath:
    """The row-by-row reading of a line: odd lines, refusals, and small changes."""

    def __init__(
        self,
        layout: Layout,
        encoding: str,
        hosted: frozenset[str],
        max_details: int,
        known: array[int] | None,
    ) -> None:
        self.layout = layout
        self.encoding = encoding
        self.hosted = hosted
        self.max_details = max_details
        self.known = known
        self.target = _target(layout.kind)
        self.key = self.target.key
        self.names = [column.name for column in _stage_table(self.target).columns]
        self.mapper = MAPPERS[layout.kind]
        limits = _length_limits(self.target.table)
        self.key_limit = limits[self.key]
        # Only the values copied from the file can exceed their column's size.
        self.checked = {name: limit for name, limit in limits.items() if name in _FROM_FILE}
        self.pick = itemgetter(*self.names)
        self.salt = layout_salt(layout)
        self.details = 0
        self.batch = _Batch()

    def reject(self, number: int, reason: str, key: str | None) -> None:
        batch = self.batch
        batch.rejected += 1
        if self.details < self.max_details:
            self.details += 1
            batch.rejections.append(Rejection(number, reason))
        if key is not None and len(key) <= self.key_limit:
            batch.claims.append((number, key, None, True, False, False))

    def line(self, number: int, raw: bytes | None, digest: bytes | None) -> None:
        """Read one line (``raw`` None: over-long); ``digest`` given: known not to be stored."""
        batch, layout = self.batch, self.layout
        if raw is None:
            batch.read += 1
            self.reject(number, f"line longer than {MAX_LINE_BYTES} bytes", None)
            return
        if digest is None:  # an odd line, not counted yet
            if not raw.strip():
                return
            batch.read += 1
            digest = line_digest(raw, self.salt)
            check_known = True
        else:
            check_known = False
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError:
            self.reject(number, f"not valid {self.encoding.upper()} text", None)
            return
        if check_known and _is_known(self.known, digest):  # the same line as a stored row
            key = line_key(text, layout)
            if key is not None:
                batch.claims.append((number, key, digest.hex(), False, True, False))
                return
        fields: dict[str, str | None] | None = None
        try:
            if "\x00" in text:
                raise RowError("contains a NUL character")
            fields = split_row(text, layout)
            record = self.mapper(fields)
            for name, limit in self.checked.items():
                value = record.get(name)
                if isinstance(value, str) and len(value) > limit:
                    raise RowError(f"{name.replace('_', ' ')} is longer than {limit} characters")
        except RowError as error:
            self.reject(number, str(error), row_key(layout.kind, fields) if fields else None)
            return
        record["line_no"] = number
        record["rejected"] = False
        record["row_hash"] = digest.hex()
        if layout.kind is SourceKind.MSS_EXTRACTION:
            record["hosted"] = record["domain"] in self.hosted
        batch.rows.append(self.pick(record))


def _child_main() -> None:
    """Entry point of the parsing process: arguments in ``argv[1]``, frames on stdout."""
    options = json.loads(sys.argv[1])
    path = Path(options["path"])
    expected = SourceKind(options["expected"]) if options["expected"] else None
    known: array[int] | None = None
    if options["known"]:
        known = array("Q")
        with open(options["known"], "rb") as handle:
            known.frombytes(handle.read())
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    try:
        for item in _parse(
            path,
            expected,
            frozenset(options["hosted"]),
            int(options["batch_size"]),
            int(options["max_details"]),
            known,
        ):
            pickle.dump(("item", item), out, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(("end", None), out)
    except DirectoryImportError as error:
        pickle.dump(("error", str(error)), out)
    except Exception as error:  # any failure must reach the parent as a message
        pickle.dump(("error", f"{path}: {type(error).__name__}: {error}"), out)
    out.flush()


def _parse_in_child(
    path: Path,
    expected: SourceKind | None,
    hosted: frozenset[str],
    batch_size: int,
    max_details: int,
    known: array[int] | None,
) -> Generator[Layout | _Batch]:
    """:func:`_parse` in a separate process, so that parsing and writing use two cores.

    The child is a fresh interpreter (no fork of a process that may hold
    threads and database connections, and no re-import of the caller's main
    module as multiprocessing's spawn would do). It writes pickled frames to a
    pipe; the pipe's small buffer is the back-pressure that keeps memory
    bounded whichever side is slower. The child is killed if the import fails.
    """
    with tempfile.TemporaryDirectory(prefix="caducee-import-") as folder:
        known_file = None
        if known:
            known_file = str(Path(folder) / "known.bin")
            with open(known_file, "wb") as handle:
                known.tofile(handle)
        options = {
            "path": str(path),
            "expected": str(expected) if expected else None,
            "hosted": sorted(hosted),
            "batch_size": batch_size,
            "max_details": max_details,
            "known": known_file,
        }
        command = [sys.executable, "-c", _CHILD_CODE, json.dumps(options)]
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert child.stdout is not None
        try:
            while True:
                try:
                    # Frames come from our own child process, never from the file's author.
                    kind, item = pickle.load(child.stdout)  # noqa: S301
                except EOFError:
                    child.wait()
                    raise DirectoryImportError(
                        f"{path}: the parsing process stopped (exit code {child.returncode})"
                    ) from None
                if kind == "end":
                    return
                if kind == "error":
                    raise DirectoryImportError(item)
                yield item
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()


_CHILD_CODE = "from caducee.directory.importer import _child_main; _child_main()"


# --- the import ------------------------------------------------------------------


def import_file(
    database: Database,
    path: Path,
    *,
    mode: ImportMode = ImportMode.FULL,
    expected: SourceKind | None = None,
    hosted_domains: Collection[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_details: int = 1000,
    now: datetime | None = None,
    parallel: bool | None = None,
    dry_run: bool = False,
    confirm_removal: RemovalCheck | None = None,
) -> ImportSummary:
    """Import one extraction file into the directory and say what changed.

    With ``dry_run`` the file is read and compared, the summary says what would change, and
    the directory is left as it was. ``confirm_removal(would_remove, existing)`` is asked,
    before anything is written, when a full import would remove rows; False cancels the
    import (:class:`ImportCancelled`, nothing changed).

    ``expected`` refuses a file of the other kind; ``hosted_domains`` marks the
    mailboxes of those domains as hosted here (A4); ``max_details`` bounds the
    number of rejections and duplicates listed (all are counted); ``parallel``
    parses in a second process (default: for files of 32 MB or more).
    Raises :class:`DirectoryImportError` when the file cannot be imported at all;
    the directory is then unchanged, unless the failure came from the database
    in the middle of the apply step (then importing again finishes the work).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    started = time.monotonic()
    hosted = frozenset(domain.lower().rstrip(".") for domain in hosted_domains)
    now = now or utcnow()
    if parallel is None:
        try:
            parallel = path.stat().st_size >= PARALLEL_MIN_BYTES
        except OSError:
            parallel = False  # open_extraction reports the problem
    # On SQLite, the directory file alone: the main file's write lock (mail) is never held.
    with database.directory_engine.connect() as connection:
        # The kind is only known from the header: read it first (cheaply).
        with open_extraction(path) as stream:
            kind = _header(_read_lines(stream), path)[0].kind
        if expected is not None and kind is not expected:
            raise DirectoryImportError(f"{path}: this is a {kind} file, not {expected}")
        target = _target(kind)
        known = _known_digests(connection, target)
        direct = _takes_direct_path(connection, target, path, dry_run=dry_run)
        arguments = (path, expected, hosted, batch_size, max_details, known)
        parsed = _parse_in_child(*arguments) if parallel else _parse(*arguments)
        try:
            layout = next(parsed)
            assert isinstance(layout, Layout)
            summary = ImportSummary(
                source=layout.kind,
                file=str(path),
                mode=mode,
                unknown_columns=layout.unknown_columns,
            )
            _import(
                connection,
                parsed,
                target,
                summary,
                batch_size,
                max_details,
                now,
                dry_run=dry_run,
                confirm_removal=confirm_removal,
                direct=direct,
            )
            if target.kind is SourceKind.MSS_EXTRACTION and hosted:
                _mark_hosted(connection, hosted)
        finally:
            parsed.close()
    summary.rejections.sort(key=lambda rejection: rejection.line)
    summary.seconds = time.monotonic() - started
    log.info("directory import done", extra={"summary": summary.to_dict()})
    return summary


def _takes_direct_path(
    connection: Connection, target: _Target, path: Path, *, dry_run: bool
) -> bool:
    """Whether this import is a first load on PostgreSQL, written straight to the directory.

    Staging a million rows and then copying them with ``INSERT … SELECT`` wrote
    every row twice, the second time row by row (12 s of a 41 s first import,
    where the ``COPY`` of the whole file takes 2 s): into an empty table, the
    rows go straight to it by ``COPY`` instead (see :func:`_first_load`).
    Only the mailbox extraction (mapped a column at a time) of a few MiB or
    more, into a table with no row of that source and at most
    ``DIRECT_MAX_EXISTING`` others (hand-made or demo mailboxes, which the load
    carries over), and never for a dry run (it must write nothing).
    """
    if dry_run or connection.dialect.name != "postgresql":
        return False
    if target.kind is not SourceKind.MSS_EXTRACTION:
        return False
    try:
        if path.stat().st_size < DIRECT_MIN_BYTES:
            return False
    except OSError:
        return False
    table = target.table
    if len(_read(connection, select(table.c.id).limit(DIRECT_MAX_EXISTING + 1))) > (
        DIRECT_MAX_EXISTING
    ):
        return False
    ours = select(table.c.id).where(table.c.source == str(target.kind)).limit(1)
    return not _read(connection, ours)


def _known_digests(connection: Connection, target: _Target) -> array[int] | None:
    """The sorted first 8 bytes of the stored rows' digests (8 bytes per row).

    Only the first 16 hex digits travel, unsorted (sorting a million integers
    here is cheaper than sorting the strings in the database), straight from
    the driver's cursor in large chunks, and are decoded a chunk at a time
    (one ``bytes.fromhex`` per chunk, not one ``int()`` per row): at a million
    rows this step took about 2 s through the ORM's row objects.
    """
    table = target.table
    query = select(func.substr(table.c.row_hash, 1, 16)).where(table.c.source == str(target.kind))
    known: array[int] = array("Q")
    compiled = query.compile(dialect=connection.dialect)
    sql, parameters = str(compiled), compiled.params
    driver = connection.connection.driver_connection
    assert driver is not None
    if connection.dialect.name == "postgresql":
        with connection.begin():  # a server-side cursor lives in a transaction
            cursor: Any = driver.cursor(name="caducee_known_digests")
            cursor.execute(sql, parameters)
            _read_prefixes(cursor, known)
    else:
        # On the driver, outside SQLAlchemy's BEGIN IMMEDIATE: a plain read, no write lock.
        cursor = driver.cursor()
        cursor.execute(sql, [parameters[name] for name in compiled.positiontup or ()])
        _read_prefixes(cursor, known)
    if not known:
        return None
    return array("Q", sorted(known))


_KNOWN_CHUNK = 50_000


def _read_prefixes(cursor: Any, known: array[int]) -> None:
    try:
        while chunk := cursor.fetchmany(_KNOWN_CHUNK):
            known.extend(_decode_prefixes([row[0] for row in chunk]))
    finally:
        cursor.close()


def _decode_prefixes(prefixes: list[str | None]) -> array[int]:
    """16-hex-digit prefixes as integers; a malformed one (a hand-made row) is skipped."""
    decoded: array[int] = array("Q")
    try:
        decoded.frombytes(bytes.fromhex("".join(cast("list[str]", prefixes))))
    except (ValueError, TypeError):
        decoded = array("Q")
        for prefix in prefixes:
            with suppress(ValueError, TypeError):
                if prefix is not None and len(prefix) == 16:
                    decoded.append(int(prefix, 16))
        return decoded
    if len(decoded) != len(prefixes):  # a shorter digest shifted the rest
        return _decode_prefixes([p if p and len(p) == 16 else "?" for p in prefixes])
    if sys.byteorder == "little":
        decoded.byteswap()  # the hex digits are big-endian
    return decoded


def _import(
    connection: Connection,
    parsed: Iterator[Layout | _Batch],
    target: _Target,
    summary: ImportSummary,
    batch_size: int,
    max_details: int,
    now: datetime,
    *,
    dry_run: bool = False,
    confirm_removal: RemovalCheck | None = None,
    direct: bool = False,
) -> None:
    stage, keys = _stage_table(target), _keys_table(target)
    sqlite = connection.dialect.name == "sqlite"
    if not sqlite:
        # Temporary tables live in per-session buffers (8 MB by default); more
        # is only accepted before the session's first temporary table.
        try:
            with connection.begin():
                connection.exec_driver_sql(f"SET temp_buffers = '{PG_TEMP_BUFFERS}'")
        except DBAPIError:
            log.debug("temp_buffers left as it was (this session used temporary tables)")
        with connection.begin():
            # The import's statements are few and big: their estimated cost makes
            # PostgreSQL compile them (JIT), measured at 0.4 s for one statement
            # that then runs in 1.3 s. Reset below.
            connection.exec_driver_sql("SET jit = off")
    with connection.begin():
        if sqlite:  # a bigger page cache for the joins of this connection, reset below
            connection.exec_driver_sql(f"PRAGMA main.cache_size=-{SQLITE_CACHE_KIB}")
            connection.exec_driver_sql(f"PRAGMA temp.cache_size=-{SQLITE_CACHE_KIB}")
            # Sorts (index builds, key order) on a helper thread too: the parsing
            # process is done by then, so the second core is free.
            connection.exec_driver_sql(f"PRAGMA threads={SQLITE_SORT_THREADS}")
        for table in (stage, keys):
            table.drop(connection, checkfirst=True)
            table.create(connection)
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now_ = time.monotonic()
        summary.phases[name] = round(now_ - clock, 3)
        clock = now_

    try:
        if direct:
            _first_load(connection, parsed, stage, keys, target, summary, max_details, now, phase)
            return
        _stage_file(connection, parsed, stage, keys, summary)
        phase("stage")
        _index_stage(connection, target, stage, keys)
        _resolve_duplicates(connection, stage, keys, target, summary, max_details)
        phase("duplicates")
        had_rows = _source_rows(connection, target)
        valid = _count(connection, stage) + _count(connection, keys, valid_only=True)
        if summary.mode is ImportMode.FULL and had_rows and not valid:
            raise DirectoryImportError(
                f"{summary.file}: no valid line; a full import would remove all {had_rows} "
                f"{target.kind} rows, refused (fix the file, or use --mode merge)"
            )
        summary.unchanged += _count(connection, keys, known_only=True)
        would_remove = 0
        if summary.mode is ImportMode.FULL and had_rows:
            would_remove = _missing_count(connection, stage, keys, target)
        if dry_run:
            _preview(connection, stage, target, summary)
            summary.removed = would_remove
            phase("preview")
            return
        if (
            would_remove
            and confirm_removal is not None
            and not confirm_removal(would_remove, had_rows)
        ):
            raise ImportCancelled(
                f"{summary.file}: cancelled; it would remove {would_remove} of "
                f"{had_rows} {target.kind} rows"
            )
        _apply(connection, stage, target, summary, batch_size, max_details, now)
        phase("apply")
        if summary.mode is ImportMode.FULL and had_rows:
            _remove_missing(connection, stage, keys, target, summary, batch_size)
            phase("remove")
    finally:
        if connection.in_transaction():
            connection.rollback()
        with suppress(Exception), connection.begin():
            for table in (stage, keys):
                table.drop(connection, checkfirst=True)
            if sqlite:
                connection.exec_driver_sql("PRAGMA main.cache_size=-2000")
                connection.exec_driver_sql("PRAGMA temp.cache_size=-2000")
                connection.exec_driver_sql("PRAGMA threads=0")
            else:
                connection.exec_driver_sql("RESET jit")


def _stage_file(
    connection: Connection,
    parsed: Iterator[Layout | _Batch],
    stage: Table,
    keys: Table,
    summary: ImportSummary,
    direct: _DirectWriter | None = None,
) -> None:
    rows, claims = _Stager(connection, stage), _Stager(connection, keys)
    for item in parsed:
        assert isinstance(item, _Batch)
        summary.read += item.read
        summary.rejected += item.rejected
        summary.rejections.extend(item.rejections)
        if direct is not None:
            direct.first_seen.split(item, direct.key)
        with _staging_transaction(connection):
            rows.write(item.rows)
            rows.write_table(item.table)
            claims.write(item.claims)
            claims.write_table(item.claims_table)
            if item.direct_table is not None:
                assert direct is not None, "direct rows without a first load"
                direct.write_table(item.direct_table)


class _DirectWriter:
    """``COPY`` of a first load's rows straight into the table being loaded (PostgreSQL).

    The columns that are the same on every row (source, red list, creation
    and update times) are not written: while the load lasts they are the load
    table's column defaults (:meth:`constant_defaults`, then
    :meth:`restore_defaults` puts the directory table's back before the swap).
    Sending them cost a quarter of the server's ``COPY`` work (parsing two
    timestamps per row) and of the CSV written here.
    """

    def __init__(
        self, connection: Connection, stage: Table, into: Table, key: str, now: datetime
    ) -> None:
        self.connection = connection
        self.key = key
        self.into = into
        self.names = [c.name for c in stage.columns if c.name not in ("line_no", "rejected")]
        self.constants: dict[str, str] = {
            "source": str(SourceKind.MSS_EXTRACTION),
            "red_list": "false",
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        # Here rather than in the parsing process, whose work bounds the stage.
        self.first_seen = _FirstSeen()

    def constant_defaults(self) -> None:
        """Make the constant columns' values the load table's defaults."""
        for name, value in self.constants.items():
            literal_value = value.replace("'", "''")
            self.connection.exec_driver_sql(
                f"ALTER TABLE {self.into.name} ALTER COLUMN {name} SET DEFAULT '{literal_value}'"
            )

    def restore_defaults(self, original: Table) -> None:
        """Give the load table's constant columns the defaults of ``original`` again."""
        defaults: dict[str, str | None] = dict(
            self.connection.exec_driver_sql(
                "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0",
                {"table": original.name},
            ).all()
        )
        for name in self.constants:
            expression = defaults.get(name)
            change = "DROP DEFAULT" if expression is None else f"SET DEFAULT {expression}"
            self.connection.exec_driver_sql(
                f"ALTER TABLE {self.into.name} ALTER COLUMN {name} {change}"
            )

    def write_table(self, table: pa.Table) -> None:
        """Write mapped rows (the staging table's columns) as new rows of this source."""
        if not table.num_rows:
            return
        table = table.select(self.names)
        columns = ", ".join(f'"{name}"' for name in table.column_names)
        driver = self.connection.connection.driver_connection
        assert driver is not None
        statement = f"COPY {self.into.name} ({columns}) FROM STDIN (FORMAT csv)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(write_csv(table))


LOAD_SUFFIX = "_load"


def _first_load(
    connection: Connection,
    parsed: Iterator[Layout | _Batch],
    stage: Table,
    keys: Table,
    target: _Target,
    summary: ImportSummary,
    max_details: int,
    now: datetime,
    phase: Callable[[str], None],
) -> None:
    """A first load on PostgreSQL: a new table filled by ``COPY``, indexed, then swapped in.

    Measured at a million rows: the ``INSERT … SELECT`` from the staging table
    took 6–12 s, and ``COPY`` into the directory table itself 22 s against 9
    for the same rows into a table without indexes (its unique address index
    updated at random, row by row). So the rows go by ``COPY``, while the file
    is read, into a new table of the same columns with no index at all
    (``directory_entries_load``); its indexes are built once, by sorting, at
    the end; then, in the same transaction, it takes the empty table's place
    (the id sequence passes to it, names of the table, constraints and indexes
    follow). Only rows whose key no earlier line had go straight there
    (:class:`_FirstSeen`); the other lines are staged and the duplicate step
    decides every repeated key exactly as on the staged path: a direct row
    that loses is deleted, the staged winners are inserted.

    The few rows the table may already hold (hand-made or demo mailboxes, none
    from this file's source) are copied into the new table first, ids and
    all, and the file's lines of their keys staged, so that the apply takes
    them over exactly as on the staged path.

    All of it is one transaction: the gateway's lookups read the old table
    and its indexes, unhindered, until the swap, which holds an exclusive lock
    for the few catalogue changes before the commit; a file that cannot be
    read to its end, or any failure, leaves the directory as it was. A change
    to the old table meanwhile (a mailbox added by hand) aborts the swap.
    """
    table = target.table
    load = table.to_metadata(MetaData(), name=table.name + LOAD_SUFFIX)
    load_target = _Target(load, target.key, target.kind)
    log.info("directory import: first load", extra={"table": table.name})
    with connection.begin():
        # Server-side memory for this transaction's sorts and index builds only.
        connection.exec_driver_sql("SET LOCAL work_mem = '128MB'")
        connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        connection.exec_driver_sql(
            f"CREATE TABLE {load.name} (LIKE {table.name} INCLUDING DEFAULTS)"
        )
        # The few rows already there (hand-made mailboxes) come along, ids and all;
        # lines of their keys are staged, so that the apply takes them over.
        names = [column.name for column in table.columns]
        connection.execute(insert(load).from_select(names, select(*table.columns)))
        carried = _fingerprint(connection, load)
        writer = _DirectWriter(connection, stage, load, target.key, now)
        writer.constant_defaults()
        writer.first_seen.add(
            str(value) for (value,) in connection.execute(select(load.c[target.key]))
        )
        _stage_file(connection, parsed, stage, keys, summary, writer)
        writer.restore_defaults(table)
        phase("stage")
        _index_stage(connection, target, stage, keys)
        losers = _resolve_duplicates(
            connection, stage, keys, target, summary, max_details, direct=True
        )
        phase("duplicates")
        # The key constraints as the database has them (primary key, unique address).
        constraints = _key_constraints(connection, table)
        for name, definition in constraints:
            connection.exec_driver_sql(
                f"ALTER TABLE {load.name} ADD CONSTRAINT {name}{LOAD_SUFFIX} {definition}"
            )
        key = load.c[target.key]
        for start in range(0, len(losers), 500):
            connection.execute(delete(load).where(key.in_(losers[start : start + 500])))
        summary.added += int(
            connection.execute(
                select(func.count()).select_from(keys).where(keys.c.direct == true())
            ).scalar_one()
        )
        _refuse_type_changes(connection, stage, load_target, summary, max_details, true())
        _apply_rows(connection, stage, load_target, summary, now, true(), ordered=False)
        for index in _search_indexes(target):
            columns = ", ".join(column.name for column in index.columns)
            connection.exec_driver_sql(
                f"CREATE INDEX {index.name}{LOAD_SUFFIX} ON {load.name} ({columns})"
            )
        _analyze_target(connection, load_target)
        _swap_in(connection, target, load, [name for name, _ in constraints], carried)
    phase("apply")


SWAP_LOCK_TIMEOUT = "200ms"
SWAP_LOCK_ATTEMPTS = 50


def _lock_briefly(connection: Connection, table: Table) -> None:
    """Take the table's exclusive lock for the swap without holding up mail for long.

    A lock request waits for the transactions reading the table, and every
    reader that comes after it waits behind it: so each attempt waits at most
    ``SWAP_LOCK_TIMEOUT`` (a savepoint keeps the load if it gives up), and the
    import fails, changing nothing, only after ``SWAP_LOCK_ATTEMPTS`` of them.
    """
    for attempt in range(SWAP_LOCK_ATTEMPTS):
        savepoint = connection.begin_nested()
        try:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
            connection.exec_driver_sql(f"LOCK TABLE {table.name} IN ACCESS EXCLUSIVE MODE")
        except DBAPIError:
            savepoint.rollback()
            log.info("directory import: table busy, swap retried", extra={"attempt": attempt})
            time.sleep(0.05)  # let the waiting readers through
            continue
        savepoint.commit()
        return
    raise DirectoryImportError(
        f"{table.name} stayed busy: the first load could not take its place; nothing changed"
    )


def _key_constraints(connection: Connection, table: Table) -> list[tuple[str, str]]:
    """(name, definition) of the table's primary key and unique constraints."""
    rows = connection.exec_driver_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%(table)s) AND contype IN ('p', 'u') ORDER BY conname",
        {"table": table.name},
    )
    return [(str(name), str(definition)) for name, definition in rows]


def _fingerprint(connection: Connection, table: Table) -> str:
    """A digest of every row of a (small) table, to tell whether it changed."""
    rows = func.string_agg(
        literal_column("t::text"), aggregate_order_by(literal("|"), literal_column("t.id"))
    )
    query = select(func.md5(func.coalesce(rows, ""))).select_from(table.alias("t"))
    return str(connection.execute(query).scalar_one())


def _swap_in(
    connection: Connection, target: _Target, load: Table, constraints: list[str], carried: str
) -> None:
    """Put the loaded table in the place of the directory table, names and all.

    ``carried`` is the fingerprint of the rows the load took over at its start:
    if the table changed since (a mailbox added or edited by hand meanwhile),
    the load would lose that change, so it gives up instead (nothing changed).
    """
    table = target.table
    _lock_briefly(connection, table)
    if _fingerprint(connection, table) != carried:
        raise DirectoryImportError(
            f"{table.name} changed during the first load; nothing was imported, "
            "import the file again"
        )
    sequence: str | None = connection.execute(
        select(func.pg_get_serial_sequence(table.name, "id"))
    ).scalar_one()
    if sequence is not None:
        connection.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY {load.name}.id")
    connection.exec_driver_sql(f"DROP TABLE {table.name}")
    connection.exec_driver_sql(f"ALTER TABLE {load.name} RENAME TO {table.name}")
    for name in constraints:
        connection.exec_driver_sql(
            f"ALTER TABLE {table.name} RENAME CONSTRAINT {name}{LOAD_SUFFIX} TO {name}"
        )
    for index in _search_indexes(target):
        connection.exec_driver_sql(f"ALTER INDEX {index.name}{LOAD_SUFFIX} RENAME TO {index.name}")


@contextmanager
def _staging_transaction(connection: Connection) -> Iterator[None]:
    """A transaction that writes only to the temporary staging tables.

    On SQLite the database's connections begin ``IMMEDIATE`` (they take the
    write lock at once); staging writes only touch the connection's own
    temporary database, so they run in a plain deferred transaction, opened
    on the driver, which never takes the main database's write lock: the
    gateway's own writes (mail being delivered) never wait for the staging.
    """
    if connection.dialect.name != "sqlite":
        # Within a first load's single transaction (PostgreSQL), part of it.
        with nullcontext() if connection.in_transaction() else connection.begin():
            yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("BEGIN")
    try:
        yield
    except BaseException:
        driver.execute("ROLLBACK")
        raise
    driver.execute("COMMIT")


def _index_stage(connection: Connection, target: _Target, stage: Table, keys: Table) -> None:
    """Prepare the staging tables for the set-based steps that follow.

    A key is claimed by a staged row (``stage``) or by a claim (``keys``: a
    line seen before, or a refused line); the staged rows are not copied into
    ``keys``. SQLite joins through indexes only (no hash joins), so both tables
    get one on the key; PostgreSQL hash-joins them and only needs statistics.
    """
    with _staging_transaction(connection):
        for table in (stage, keys):
            if connection.dialect.name == "postgresql":
                # Temporary tables are never analysed by autovacuum. Only the
                # columns the joins and filters use: sampling all of a wide
                # staged row cost 0.5 s per 200,000 rows.
                connection.exec_driver_sql(
                    f"ANALYZE {table.name} ({target.key}, rejected, line_no)"
                )
            else:
                driver = connection.connection.driver_connection
                assert driver is not None
                driver.execute(f"CREATE INDEX ix_{table.name}_key ON {table.name} ({target.key})")


def _unclaimed(stage: Table, keys: Table, target: _Target) -> ColumnElement[bool]:
    """True for a row of the target table whose key the file does not claim.

    Written as two ``NOT EXISTS`` (not ``NOT (… OR …)``) so that PostgreSQL
    plans two anti-joins instead of a nested loop.
    """
    column = target.table.c[target.key]
    return and_(
        ~exists().where(stage.c[target.key] == column),
        ~exists().where(keys.c[target.key] == column),
    )


def _count(
    connection: Connection, table: Table, *, valid_only: bool = False, known_only: bool = False
) -> int:
    query = select(func.count()).select_from(table)
    if valid_only:
        query = query.where(table.c.rejected == false())
    if known_only:
        query = query.where(table.c.known == true())
    return int(_read(connection, query)[0][0])


def _source_rows(connection: Connection, target: _Target) -> int:
    table = target.table
    query = select(func.count()).select_from(table).where(table.c.source == str(target.kind))
    return int(_read(connection, query)[0][0])


def _read(connection: Connection, statement: Any) -> list[tuple[Any, ...]]:
    """The rows of a read-only statement, without taking SQLite's write lock.

    The database's SQLite connections begin ``IMMEDIATE`` (a writer must not
    fail upgrading its lock), so a read run through SQLAlchemy held the write
    lock for as long as it ran: counting, or finding the duplicates or the
    missing rows of a million-row import, kept mail delivery waiting for a
    second or more. On SQLite the statement runs on the driver instead (in
    the open transaction if there is one, else on its own, as a plain read);
    on PostgreSQL, readers never block writers, and it runs as usual. Values
    come back as the driver gives them (counts, keys, line numbers).
    """
    if connection.dialect.name != "sqlite":
        outside = not connection.in_transaction()
        rows = [tuple(row) for row in connection.execute(statement)]
        if outside:  # end the transaction this read began
            connection.rollback()
        return rows
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    parameters = [compiled.params[name] for name in compiled.positiontup or ()]
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.execute(str(compiled), parameters)
    try:
        return cast("list[tuple[Any, ...]]", cursor.fetchall())
    finally:
        cursor.close()


def _resolve_duplicates(
    connection: Connection,
    stage: Table,
    keys: Table,
    target: _Target,
    summary: ImportSummary,
    max_details: int,
    *,
    direct: bool = False,
) -> list[str]:
    """Keep one line per key: valid before refused, then smallest digest, then first.

    The keys claimed twice are found without sorting every claim: a key is
    repeated within the staged rows, within the claims, or claimed by both,
    and each of the three is answered by the key index of the staging tables
    (SQLite walks it in order, PostgreSQL hashes), the third by probing the
    larger table from the smaller one. A file repeats few keys (0.03 % of
    the lines), so only their lines are read back, through the same indexes.

    Returns the keys whose line written straight to the table by a first load
    (``direct``) lost to a staged line: that row must go, the winner is inserted.
    """
    # The repeated keys are read first: given as values, the claims of a few
    # hundred keys are found by one scan (PostgreSQL) or the key indexes
    # (SQLite); as a subquery, PostgreSQL expected half the file to match and
    # hashed every claim to join them (1.7 s at a million lines).
    repeated = sorted(
        str(row[0])
        for row in _read(connection, _repeated_keys(connection, stage, keys, target, direct=direct))
    )
    rows: list[tuple[int, str, bool, str | None, bool]] = []
    for start in range(0, len(repeated), _REPEATED_CHUNK):
        chunk = repeated[start : start + _REPEATED_CHUNK]
        claims = union_all(
            *[
                select(
                    table.c.line_no,
                    table.c[target.key].label("key"),
                    table.c.rejected,
                    table.c.row_hash,
                    (table.c.direct if table is keys else false()).label("direct"),
                ).where(table.c[target.key].in_(chunk))
                for table in (stage, keys)
            ]
        )
        rows += cast("list[tuple[int, str, bool, str | None, bool]]", _read(connection, claims))
    # Valid before refused, then the smallest digest, then the first line.
    rows.sort(key=lambda row: (row[1], bool(row[2]), row[3] or "", row[0]))
    dropped: list[int] = []
    losers: list[str] = []
    kept_key: str | None = None
    kept_line = 0
    for line_no, key_value, rejected, _digest, was_direct in rows:
        if key_value != kept_key:
            kept_key, kept_line = key_value, line_no
            continue
        dropped.append(line_no)
        if was_direct:
            losers.append(key_value)
        if not rejected:  # a refused line is already counted as rejected
            summary.duplicates += 1
            if len(summary.duplicate_lines) < max_details:
                summary.duplicate_lines.append(Duplicate(line_no, key_value, kept_line))
    summary.duplicate_lines.sort(key=lambda duplicate: duplicate.line)
    for start in range(0, len(dropped), 500):
        lines = dropped[start : start + 500]
        with nullcontext() if connection.in_transaction() else connection.begin():
            for table in (stage, keys):
                connection.execute(delete(table).where(table.c.line_no.in_(lines)))
    return losers


def _repeated_keys(
    connection: Connection, stage: Table, keys: Table, target: _Target, *, direct: bool = False
) -> Any:
    """The keys claimed by more than one line, as a subquery (see :func:`_resolve_duplicates`).

    On a first load (``direct``) no two direct claims share a key
    (:class:`_FirstSeen`), so a key claimed twice within the claims has a
    claim that is not direct (a refused line): those few are probed into the
    claims, instead of grouping a million of them.
    """
    within = [
        select(stage.c[target.key].label("key"))
        .group_by(stage.c[target.key])
        .having(func.count() > 1)
    ]
    if direct:
        other = keys.alias("other")
        within.append(
            select(keys.c[target.key].label("key")).where(
                keys.c.direct == false(),
                exists().where(
                    other.c[target.key] == keys.c[target.key], other.c.line_no != keys.c.line_no
                ),
            )
        )
    else:
        within.append(
            select(keys.c[target.key].label("key"))
            .group_by(keys.c[target.key])
            .having(func.count() > 1)
        )
    small, large = (stage, keys)
    if _count(connection, stage) > _count(connection, keys):
        small, large = keys, stage
    if connection.dialect.name == "postgresql":
        # PostgreSQL (15) hashes the inner side of a semi-join: the larger
        # table is scanned against a hash of the smaller (measured at a million
        # claims: 0.08 s, against 0.36 s to hash them the other way round).
        small, large = large, small
    both = select(small.c[target.key].label("key")).where(
        exists().where(large.c[target.key] == small.c[target.key])
    )
    return union(*within, both)


_REPEATED_CHUNK = 5000


def _refuse_type_changes(
    connection: Connection,
    stage: Table,
    target: _Target,
    summary: ImportSummary,
    max_details: int,
    condition: ColumnElement[bool],
) -> None:
    """A mailbox's BAL type never changes (A3): a line that would change it is refused."""
    if target.kind is not SourceKind.MSS_EXTRACTION:
        return
    table = target.table
    rows = cast(
        "list[tuple[int, str, str]]",
        _read(
            connection,
            select(stage.c.line_no, table.c.bal_type, stage.c.bal_type)
            .join(table, table.c.address == stage.c.address)
            .where(condition, stage.c.rejected == false(), table.c.bal_type != stage.c.bal_type),
        ),
    )
    if not rows:
        return
    with nullcontext() if connection.in_transaction() else connection.begin():
        for start in range(0, len(rows), 500):
            chunk = [row[0] for row in rows[start : start + 500]]
            connection.execute(
                update(stage).where(stage.c.line_no.in_(chunk)).values(rejected=True)
            )
    for line_no, old, new in rows:
        summary.rejected += 1
        if len(summary.rejections) < max_details:
            summary.rejections.append(
                Rejection(line_no, f"BAL type cannot change from {old} to {new} (A3)")
            )


def _apply(
    connection: Connection,
    stage: Table,
    target: _Target,
    summary: ImportSummary,
    batch_size: int,
    max_details: int,
    now: datetime,
) -> None:
    """Insert new rows and update changed ones: set-based, in one step or in batches.

    PostgreSQL readers never wait for writers, so the whole file is applied
    with one ``UPDATE … FROM`` and one ``INSERT … SELECT`` against the staged
    rows. SQLite has one writer at a time: the staged rows are applied batch
    by batch in key order (one short transaction each), so that the gateway's
    own writes, mail being delivered, wait at most one batch; lookups into
    the key index (and, after a bulk load, into the table, stored in key
    order) are then sequential instead of random.
    """
    existing = _count(connection, target.table)
    valid = _count(connection, stage, valid_only=True)
    bulk = valid >= BULK_MIN_ROWS and existing < valid * BULK_RATIO
    if connection.dialect.name == "postgresql":
        _apply_postgresql(
            connection, stage, target, summary, max_details, now, bulk=bulk, fresh=not existing
        )
        return
    _ensure_indexes(connection, target)
    if bulk:
        _refuse_type_changes(connection, stage, target, summary, max_details, true())
        size = max(batch_size, BULK_BATCH_SIZE)
        fresh = existing <= DIRECT_MAX_EXISTING
        _bulk_apply(connection, stage, target, summary, now, size, fresh=fresh)
        return
    key = stage.c[target.key]
    after: str | None = None
    while True:
        with connection.begin():
            lower = true() if after is None else key > after
            upper: str | None = connection.execute(
                select(key).where(lower).order_by(key).offset(batch_size - 1).limit(1)
            ).scalar()
            in_batch = lower if upper is None else and_(lower, key <= upper)
            _refuse_type_changes(connection, stage, target, summary, max_details, in_batch)
            _apply_rows(connection, stage, target, summary, now, in_batch, ordered=False)
        if upper is None:
            return
        after = upper


def _search_indexes(target: _Target) -> list[Index]:
    return sorted(target.table.indexes, key=lambda index: str(index.name))


def _ensure_indexes(connection: Connection, target: _Target) -> None:
    """Create any search index that is missing (an interrupted bulk load dropped it)."""
    with connection.begin():
        for index in _search_indexes(target):
            index.create(connection, checkfirst=True)


def _apply_postgresql(
    connection: Connection,
    stage: Table,
    target: _Target,
    summary: ImportSummary,
    max_details: int,
    now: datetime,
    *,
    bulk: bool,
    fresh: bool = False,
) -> None:
    """The whole file in one transaction; a bulk load builds the search indexes after it.

    Inserting a million rows into seven B-tree indexes costs a random index
    update per row and index; building each index once, by sorting, after the
    rows, is several times faster. The indexes are
    dropped in a transaction of their own (``DROP INDEX`` locks the table
    against readers until commit, so it must commit at once), then rows and
    indexes come in one transaction, which holds only locks that let readers
    (the SMTP lookups by address, on the unique index that stays) carry on.
    If that transaction fails, the dropped indexes are created again.
    """
    _ensure_indexes(connection, target)
    indexes = _search_indexes(target) if bulk else []
    if indexes:
        log.info("directory import: bulk load", extra={"table": target.table.name})
        with connection.begin():
            for index in indexes:
                index.drop(connection)
    try:
        with connection.begin():
            # Server-side memory for this transaction's sorts and index builds only.
            connection.exec_driver_sql("SET LOCAL work_mem = '128MB'")
            connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            _refuse_type_changes(connection, stage, target, summary, max_details, true())
            # In file order: sorting a million wide rows by key costs more (measured:
            # 9 s against 6 s at 1,000,000 rows) than the random inserts it saves
            # in the unique address index.
            _apply_rows(connection, stage, target, summary, now, true(), ordered=False, fresh=fresh)
            for index in indexes:
                index.create(connection)
    finally:
        if indexes:
            _ensure_indexes(connection, target)
    if indexes:
        with connection.begin():
            _analyze_target(connection, target)


def _analyze_target(connection: Connection, target: _Target) -> None:
    """Statistics of the indexed (searched) columns after a bulk load, at once.

    Autovacuum analyses the whole table after so large a change, but later;
    the planner needs them for the first searches.
    """
    columns = sorted(
        {column.name for index in target.table.indexes for column in index.columns}
        | {target.key, "red_list", "source"}
    )
    connection.exec_driver_sql(f"ANALYZE {target.table.name} ({', '.join(columns)})")


def _bulk_apply(
    connection: Connection,
    stage: Table,
    target: _Target,
    summary: ImportSummary,
    now: datetime,
    batch_size: int,
    *,
    fresh: bool = False,
) -> None:
    """A first load on SQLite: drop the search indexes, insert in key order, build them once.

    Inserting a million rows into six B-tree indexes in file order costs a
    random index update per row and index; inserting in key order (the unique
    address index then only grows at its end) and building each index once,
    by sorting, is several times faster.

    All of it is one transaction, as PostgreSQL's first load is: the gateway's
    lookups and searches read the directory as it was, with its indexes, until
    the commit, and a load that fails leaves it unchanged. The directory has a
    SQLite file of its own (:func:`caducee.storage.db.directory_file`), so
    this transaction's write lock, held for the whole load, is never the one
    mail is committed under; only an administrator's edit of the directory
    waits for it. An index that an older, interrupted load left dropped is
    built by the next import (:func:`_ensure_indexes`).

    ``fresh``: the table holds only a few rows (hand-made mailboxes). The
    staged lines of their keys are applied first (update or take over),
    through the staging key index; then every other staged row is new and each
    batch only inserts (see :func:`_apply_rows`).
    """
    indexes = _search_indexes(target)
    log.info("directory import: bulk load", extra={"table": target.table.name})
    key = stage.c[target.key]
    try:
        with connection.begin():
            if fresh:
                present = key.in_(select(target.table.c[target.key]))
                _apply_rows(connection, stage, target, summary, now, present, ordered=False)
            for index in indexes:
                index.drop(connection)
            after: str | None = None
            while True:
                lower = true() if after is None else key > after
                upper: str | None = connection.execute(
                    select(key).where(lower).order_by(key).offset(batch_size - 1).limit(1)
                ).scalar()
                in_batch = lower if upper is None else and_(lower, key <= upper)
                _apply_rows(
                    connection, stage, target, summary, now, in_batch, ordered=True, fresh=fresh
                )
                if upper is None:
                    break
                after = upper
            for index in indexes:
                index.create(connection)
    finally:
        _ensure_indexes(connection, target)


def _apply_rows(
    connection: Connection,
    stage: Table,
    target: _Target,
    summary: ImportSummary,
    now: datetime,
    condition: ColumnElement[bool],
    *,
    ordered: bool,
    fresh: bool = False,
) -> None:
    """Apply the valid staged rows matching ``condition``: update changed, insert new.

    ``fresh``: no staged row of ``condition`` has a key the table holds (see
    :func:`_bulk_apply`), so there is nothing to update or to count as
    unchanged; the batch is one insert (on SQLite's first load the count and
    the update cost 6 s of 37 at a million rows, each reading every staged row
    of the batch again).
    """
    table = target.table
    key = stage.c[target.key]
    data = [column.name for column in stage.columns if column.name not in ("line_no", "rejected")]
    timestamp = bindparam("now", now, type_=UtcDateTime())
    source = literal(str(target.kind), String(20))
    rows = and_(condition, stage.c.rejected == false())
    valid = 0
    if not fresh:
        count = select(func.count()).select_from(stage).where(rows)
        valid = int(connection.execute(count).scalar_one())
        if not valid:
            return
    changes: dict[str, Any] = {name: stage.c[name] for name in data if name != target.key}
    if "pharmacy" in changes:
        changes["pharmacy"] = or_(stage.c.pharmacy, table.c.pharmacy)
        changes["hosted"] = or_(stage.c.hosted, table.c.hosted)
    changes["source"] = source
    changes["updated_at"] = timestamp
    changed = 0
    if not fresh:
        changed = connection.execute(
            update(table)
            .where(
                table.c[target.key] == key,
                rows,
                or_(table.c.row_hash != stage.c.row_hash, table.c.source != source),
            )
            .values(changes),
            execution_options={"preserve_rowcount": True},
        ).rowcount
    new_rows = select(
        *[stage.c[name] for name in data], source, false(), timestamp, timestamp
    ).where(rows, ~exists().where(table.c[target.key] == key))
    if ordered:
        new_rows = new_rows.order_by(key)
    added = connection.execute(
        insert(table).from_select(
            [*data, "source", "red_list", "created_at", "updated_at"], new_rows
        ),
        execution_options={"preserve_rowcount": True},
    ).rowcount
    summary.added += added
    summary.changed += changed
    if not fresh:
        summary.unchanged += valid - added - changed


def _missing_count(connection: Connection, stage: Table, keys: Table, target: _Target) -> int:
    """How many rows of this source kind the file no longer has (a full import removes them)."""
    table = target.table
    query = (
        select(func.count())
        .select_from(table)
        .where(table.c.source == str(target.kind), _unclaimed(stage, keys, target))
    )
    return int(_read(connection, query)[0][0])


def _preview(connection: Connection, stage: Table, target: _Target, summary: ImportSummary) -> None:
    """Count what :func:`_apply_rows` would add and change, writing nothing."""
    table = target.table
    key = stage.c[target.key]
    source = literal(str(target.kind), String(20))
    rows = stage.c.rejected == false()
    valid = int(_read(connection, select(func.count()).select_from(stage).where(rows))[0][0])
    added = int(
        _read(
            connection,
            select(func.count())
            .select_from(stage)
            .where(rows, ~exists().where(table.c[target.key] == key)),
        )[0][0]
    )
    changed = int(
        _read(
            connection,
            select(func.count())
            .select_from(stage)
            .join(table, table.c[target.key] == key)
            .where(rows, or_(table.c.row_hash != stage.c.row_hash, table.c.source != source)),
        )[0][0]
    )
    summary.added += added
    summary.changed += changed
    summary.unchanged += valid - added - changed


def _remove_missing(
    connection: Connection,
    stage: Table,
    keys: Table,
    target: _Target,
    summary: ImportSummary,
    batch_size: int,
) -> None:
    """Delete the rows of this source kind whose key the file no longer has.

    PostgreSQL: one ``DELETE … WHERE NOT EXISTS`` (readers are never blocked).
    SQLite: batches by id, one short write transaction each, so that the
    gateway's own writes (mail being delivered) wait at most one batch.
    """
    table = target.table
    missing = and_(table.c.source == str(target.kind), _unclaimed(stage, keys, target))
    if connection.dialect.name == "postgresql":
        with connection.begin():
            summary.removed += connection.execute(
                delete(table).where(missing), execution_options={"preserve_rowcount": True}
            ).rowcount
        return
    last_id = 0
    while True:
        # Found by a plain read (no write lock: it may scan the whole table),
        # deleted in a short write transaction that checks them again.
        ids: list[int] = [
            row[0]
            for row in _read(
                connection,
                select(table.c.id)
                .where(missing, table.c.id > last_id)
                .order_by(table.c.id)
                .limit(batch_size),
            )
        ]
        if not ids:
            return
        with connection.begin():
            summary.removed += connection.execute(
                delete(table).where(table.c.id.in_(ids), missing),
                execution_options={"preserve_rowcount": True},
            ).rowcount
        last_id = ids[-1]


def _mark_hosted(connection: Connection, hosted: frozenset[str]) -> None:
    """Mailboxes of our own domains are hosted here (A4), whatever the file said."""
    table = cast(Table, DirectoryEntry.__table__)
    with connection.begin():
        connection.execute(
            update(table)
            .where(table.c.domain.in_(sorted(hosted)), table.c.hosted == false())
            .values(hosted=True)
        )
