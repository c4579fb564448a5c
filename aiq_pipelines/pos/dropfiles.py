"""A drop folder of CSV exports: which files it holds, and their rows parsed by the reference schema's column types.

Files are named after the reference table they export (``transactions-2026-06-10.csv``, ``customers.csv.gz``, ...)
and carry its column names as headers, or an export's own names mapped onto them (a column map). They are only
ever read. An empty value is NULL; a required column that is missing fails the file; a value that does not parse,
or holds a control character (a NUL, an escape), fails its row, with the file's line number. A line with no value at
all (a trailing empty line, a line of separators) is skipped and counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from aiq_pipelines.pos.reference import TABLES, Column, reference_columns

SUFFIXES = (".csv", ".csv.gz")
# A product description may be long; the csv module's default limit (128 KiB a field) would fail the whole file.
csv.field_size_limit(max(csv.field_size_limit(), 16 << 20))
ColumnMap = Mapping[str, Mapping[str, str]]  # file kind -> reference column -> the export's header
_TRUE, _FALSE = {"1", "true", "t", "yes", "y"}, {"0", "false", "f", "no", "n"}
# C0 control characters but tab, line feed and carriage return: a NUL or an escape in a field is a broken export,
# never a value to store or send to AIQ.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


class DropFileError(ValueError):
    """A file that cannot be read at all (missing columns, not CSV, not UTF-8); the message names the file."""


@dataclass(frozen=True)
class DropFile:
    """A file of the drop folder as one look saw it."""

    path: Path
    kind: str  # the reference table it exports
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def look(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


class Row(NamedTuple):
    """One data row: its line in the file, its values by reference column, or the problem that rejected it."""

    line: int
    values: dict[str, Any] | None
    problem: str | None
    raw: dict[str, str]


def kind_of(name: str) -> str | None:
    """The reference table a file name exports, or None for a file that is not a drop (hidden, temporary, other)."""
    if name.startswith((".", "~")) or not name.lower().endswith(SUFFIXES):
        return None
    return next((table for table in TABLES if name.startswith(table)), None)


def scan(folder: Path) -> list[DropFile]:
    """The folder's drop files, in the order they are applied: by table (a table's references first), then oldest
    first, so a later export of a row replaces an earlier one."""
    files = []
    for path in folder.iterdir():
        kind = kind_of(path.name)
        if kind is None or not path.is_file():
            continue
        stat = path.stat()
        files.append(DropFile(path, kind, stat.st_size, stat.st_mtime_ns))
    return sorted(files, key=lambda f: (TABLES.index(f.kind), f.mtime_ns, f.name))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_column_map(path: Path) -> dict[str, dict[str, str]]:
    """A column map file: ``{kind: {reference column: export header}}``; ValueError naming what is wrong."""
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a mapping of file kind to {{reference column: export header}}")
    columns = reference_columns()
    for kind, mapping in content.items():
        if kind not in columns:
            raise ValueError(f"{path}: {kind!r} is not a file kind; expected one of {', '.join(TABLES)}")
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{path}: {kind}: expected reference column: export header pairs")
        unknown = sorted(set(mapping) - {c.name for c in columns[kind]})
        if unknown:
            raise ValueError(f"{path}: {kind}: {', '.join(map(str, unknown))} not columns of the reference {kind} table")
    return {kind: dict(mapping) for kind, mapping in content.items()}


def _timestamp(text: str) -> str:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds" if value.microsecond else "seconds")


def _numeric(text: str) -> str:
    value = Decimal(text)
    if not value.is_finite():
        raise InvalidOperation
    return text


def _boolean(text: str) -> int:
    lowered = text.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return int(lowered in _TRUE)
    raise ValueError


_PARSERS = {
    "text": (str, ""),
    "integer": (int, "a whole number"),
    "numeric": (_numeric, "a number"),
    "timestamp": (_timestamp, "a timestamp such as 2026-06-10 14:00:05 (UTC) or 2026-06-10T08:00:05-06:00"),
    "date": (lambda text: dt.date.fromisoformat(text).isoformat(), "a date such as 1985-05-16"),
    "boolean": (_boolean, "true or false (1/0, yes/no)"),
}


def _default(column: Column) -> Any:
    if column.default is None:
        return None
    text = column.default.strip("'")
    return _PARSERS[column.kind][0](text)


def read_rows(file: DropFile, column_map: ColumnMap | None = None) -> Iterator[Row]:
    """The file's data rows, streamed. Raises ``DropFileError`` for a file that lacks a required column, is not
    UTF-8 or is a broken gzip; an empty file has no rows."""
    columns = reference_columns()[file.kind]
    headers = {c.name: (column_map or {}).get(file.kind, {}).get(c.name, c.name) for c in columns}
    try:
        opener = gzip.open if file.name.lower().endswith(".gz") else open
        with opener(file.path, "rt", encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, strict=True)
            header = next(reader, None)
            if header is None:
                return
            position = {name.strip(): i for i, name in enumerate(header)}
            missing = [headers[c.name] for c in columns if c.required and headers[c.name] not in position]
            if missing:
                raise DropFileError(f"{file.name}: missing required columns {', '.join(missing)} (the header has "
                                    f"{', '.join(position) or 'nothing'}; map an export's own headers in "
                                    "POS_DROP_COLUMNS_FILE)")
            present = [(c, position[headers[c.name]]) for c in columns if headers[c.name] in position]
            line = reader.line_num
            for fields in reader:
                yield _row(line + 1, fields, present, len(header))
                line = reader.line_num
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, csv.Error) as exc:
        raise DropFileError(f"{file.name}: not a readable CSV file ({type(exc).__name__}: {exc})") from None


def _control_character(text: str) -> str | None:
    """The first control character in ``text`` that no export means (tab and line breaks are text's own), if any."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def _row(line: int, fields: list[str], present: list[tuple[Column, int]], width: int) -> Row:
    raw = {column.name: fields[i] for column, i in present if i < len(fields)}
    if not any(field.strip() for field in fields):
        return Row(line, None, None, raw)  # a blank line or a line of separators only: nothing to load or to refuse
    if len(fields) != width:
        return Row(line, None, f"has {len(fields)} fields where the header has {width}", raw)
    values: dict[str, Any] = {}
    for column, i in present:
        text = fields[i].strip()
        if (control := _control_character(fields[i])) is not None:
            return Row(line, None, f"{column.name}: contains the control character {control}", raw)
        if not text:
            if column.required:
                return Row(line, None, f"{column.name} is empty", raw)
            values[column.name] = _default(column)
            continue
        parse, expected = _PARSERS[column.kind]
        try:
            values[column.name] = parse(text) if column.kind != "text" else fields[i]
        except (ValueError, InvalidOperation):
            return Row(line, None, f"{column.name}: {text[:40]!r} is not {expected}", raw)
    return Row(line, values, None, raw)


def files_naming(files: list[DropFile], kind: str, column: str, value: str,
                 column_map: ColumnMap | None = None) -> list[str]:
    """The names of the ``kind`` files among ``files`` with a line whose ``column`` is ``value`` (unreadable files
    aside: they load nothing)."""
    named = []
    for file in files:
        if file.kind != kind:
            continue
        try:
            if any(row.raw.get(column, "").strip() == value for row in read_rows(file, column_map)):
                named.append(file.name)
        except DropFileError:
            continue
    return named


def write_table(rows: Iterator[tuple[Any, ...]], columns: list[str], path: Path) -> int:
    """Write rows as a drop file (gzip when the name ends in .gz); NULL as an empty value. Returns the rows written."""
    opener = gzip.open if path.name.endswith(".gz") else open
    count = 0
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if value is None else value for value in row])
            count += 1
    return count


def export_tables(engine: Any, folder: Path, *, gzip_files: bool = False) -> dict[str, int]:
    """Write every reference table of the database at ``engine`` into ``folder`` as drop files (``<table>.csv``,
    or ``.csv.gz``), as a POS's daily export would. Returns the rows written per table."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for table, columns in reference_columns().items():
        names = [c.name for c in columns]
        keys = ", ".join(c.name for c in columns if c.key)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM {table} ORDER BY {keys}")
            path = folder / f"{table}.csv{'.gz' if gzip_files else ''}"
            written[table] = write_table(iter(rows), names, path)
    return written
