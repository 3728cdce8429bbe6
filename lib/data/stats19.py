"""Reading STATS19 files of any era into the canonical schema (`lib.data.schema`), a year at a time.

`read_table` maps the header of any era to the canonical names (`lib.data.schema.canonical_columns`,
historic codes under plain names moving to their `*_historic` twins): a UTF-8 BOM is skipped, index
and reference columns stay text (leading zeros and letters kept), codes become int32 (blank -> -1),
coordinates float64, `date` (DD/MM/YYYY) a timestamp, `time` stays text (HH:MM, or missing). A 2024
column whose file holds only its historic twin is then absent (-1). Absent optional columns are filled
as missing and columns outside the schema are dropped; both are listed (`lib.data.tables.RawTable`, or
`DataFrame.attrs`) for `lib.data.validate` to report. Each row keeps its `source_line` (the header is
line 1) so that later errors can point at it. `read_raw` returns the Arrow columns, `read_table` a
DataFrame.

Problems found while reading are fatal (`lib.data.validate.ValidationError`, naming file, line, column and
value): a missing required column, a ragged row or truncated file (one that does not end with a line
break), a non-numeric value in a numeric column, an unparseable date. A file cut exactly at a line
break looks complete; the count checks in `lib.data.validate` then report the missing rows. The checks
across rows and tables live in `lib.data.validate`.

`read_year` reads and validates a year's three files (`lib.data.download.fetch_year` finds them);
`load_year` does both. Neither imports pandas unless a DataFrame is asked for (`YearData.collisions`, ...).
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lib.data.download import Source, YearNotPublished, fetch_year
from lib.data.schema import DATE, FLOAT, HISTORIC_TWINS, INT, REQUIRED, SCHEMA, TEXT, TIME, canonical_columns
from lib.data.tables import RawTable, to_frame
from lib.data.validate import Finding, Links, ValidationError, find_links, validate_tables

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

NULL_VALUES = ["", "NULL", "null", "NA", "N/A"]
DEFAULT_BLOCK_SIZE = 16 << 20


@dataclass
class _Plan:
    file: str
    header: list[str]
    names: list[str]  # canonical name per file column ("" for dropped ones)
    kinds: dict[str, str]  # kept canonical column -> kind
    dropped: list[str]  # file columns outside the schema
    absent: list[str]  # schema columns the file does not have


def _plan(header: list[str], table: str, file: str) -> _Plan:
    schema = SCHEMA[table]
    canonical = canonical_columns(header)
    seen: dict[str, str] = {}
    for raw, name in zip(header, canonical, strict=True):
        if name in seen and name in schema:
            raise ValidationError(file, 1, raw, None, f"means {name!r}, as column {seen[name]!r} does")
        seen[name] = raw
    for required in REQUIRED[table]:
        if required not in seen and HISTORIC_TWINS.get(required) not in seen:
            raise ValidationError(file, 1, required, None, f"required column is missing from the {table} file")
    kept = [name if name in schema else "" for name in canonical]
    derivable = {"collision_year", "collision_ref_no"}  # legacy files: both come from the index
    return _Plan(
        file=file,
        header=header,
        names=kept,
        kinds={name: schema[name] for name in kept if name},
        dropped=[raw for raw, name in zip(header, kept, strict=True) if not name],
        absent=[name for name in schema if name not in seen and name not in derivable],
    )


def read_header(path: Path) -> list[str]:
    """The header row, BOM-safe."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader([handle.readline()]), [])


def read_table(
    path: Path,
    table: str,
    years: int | Collection[int] | None = None,
    *,
    file: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> pd.DataFrame:
    """`read_raw` as a DataFrame, whose `attrs` hold `source_file`, `table`, `absent_columns` (filled as
    missing) and `dropped_columns` (not in the schema)."""
    return to_frame(read_raw(path, table, years, file=file, block_size=block_size))


def read_raw(
    path: Path,
    table: str,
    years: int | Collection[int] | None = None,
    *,
    file: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> RawTable:
    """Read a published file of any era into canonical Arrow columns, keeping only `years` if given.

    Without `years` the whole file is parsed at once (in parallel). With `years` it is read as a
    stream of `block_size` batches filtered one by one, so a multi-year file costs memory only for the
    rows kept. `file` names the file in errors (default: the file name).
    """
    path = Path(path)
    file = file or path.name
    _check_complete(path, file)
    plan = _plan(read_header(path), table, file)
    wanted = None if years is None else ({years} if isinstance(years, int) else set(years))
    rows = _canonical(_read_arrow(path, plan, wanted, block_size), plan, table)
    logger.info("Read %s rows of the %s table from %s.", f"{rows.num_rows:,}", table, file)
    return RawTable(rows, file, table, plan.absent, plan.dropped)


def _check_complete(path: Path, file: str) -> None:
    """A published CSV ends with a line break; one that does not was cut off."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            raise ValidationError(file, 1, None, None, "the file is empty")
        handle.seek(max(handle.tell() - 4096, 0))
        tail = handle.read()
    if not tail.endswith(b"\n"):
        last_line = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
        lines = _count_lines(path)
        raise ValidationError(file, lines, None, last_line, "the file does not end with a line break: it was cut off")


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) + 1


def _arrow_types(plan: _Plan, integer: pa.DataType) -> dict[str, pa.DataType]:
    kinds = {INT: integer, FLOAT: pa.float64()}
    return {name: kinds.get(kind, pa.string()) for name, kind in plan.kinds.items()}


def _read_arrow(path: Path, plan: _Plan, years: set[int] | None, block_size: int) -> pa.Table:
    """The kept columns plus `source_line`; a whole file in parallel, or a stream filtered to `years`.

    Integer columns are parsed as int32 (fast); if that fails they are parsed again as float64, which
    accepts "5.0" (`_convert` then insists on whole numbers), and if that fails too the bad row is named.
    """
    try:
        return _read_arrow_as(path, plan, years, block_size, pa.int32())
    except pa.ArrowInvalid:
        pass
    try:
        return _read_arrow_as(path, plan, years, block_size, pa.float64())
    except pa.ArrowInvalid as error:
        _diagnose(path, plan)
        raise ValidationError(plan.file, None, None, None, f"cannot be parsed: {error}") from error


def _read_arrow_as(path: Path, plan: _Plan, years: set[int] | None, block_size: int, integer: pa.DataType):
    column_names = [name or f"_dropped_{position}" for position, name in enumerate(plan.names)]
    # A whole file is read in pyarrow's default 1 MB blocks, which both cores parse at once (16 MB blocks
    # left a single-year file in one or two blocks, parsed on one core); a stream uses `block_size`.
    read_options = pacsv.ReadOptions(column_names=column_names, skip_rows=1,
                                     **({} if years is None else {"block_size": block_size}))
    convert_options = pacsv.ConvertOptions(
        column_types=_arrow_types(plan, integer),
        include_columns=list(plan.kinds),
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    if years is None:
        table = pacsv.read_csv(path, read_options=read_options, convert_options=convert_options)
        lines = pa.array(np.arange(2, table.num_rows + 2, dtype=np.int32))
        return table.append_column("source_line", lines)
    batches = []
    first_line = 2
    with pacsv.open_csv(path, read_options=read_options, convert_options=convert_options) as reader:
        schema = reader.schema.append(pa.field("source_line", pa.int32()))
        for batch in reader:
            lines = pa.array(np.arange(first_line, first_line + batch.num_rows, dtype=np.int32))
            first_line += batch.num_rows
            batch = pa.RecordBatch.from_arrays([*batch.columns, lines], schema=schema)
            batch = batch.filter(_year_mask(batch, years))
            if batch.num_rows:
                batches.append(batch)
    return pa.Table.from_batches(batches, schema=schema)


def _year_mask(batch: pa.RecordBatch, years: set[int]) -> pa.Array:
    if "collision_year" in batch.schema.names:
        year = batch.column("collision_year")
        return pc.fill_null(pc.is_in(year, pa.array(sorted(years)).cast(year.type)), False)
    prefix = pc.utf8_slice_codeunits(batch.column("collision_index"), 0, 4)
    return pc.fill_null(pc.is_in(prefix, pa.array([str(year) for year in sorted(years)])), False)


def _diagnose(path: Path, plan: _Plan) -> None:
    """Find the first row pyarrow rejected and raise a ValidationError naming it (slow; errors only)."""
    numeric = {position for position, name in enumerate(plan.names) if plan.kinds.get(name) in (INT, FLOAT)}
    width = len(plan.header)
    with open(path, "rb") as handle:
        handle.readline()
        for line_number, raw in enumerate(handle, start=2):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValidationError(plan.file, line_number, None, raw[:80], f"is not UTF-8 text ({error})") from None
            if not text.strip():
                continue
            row = next(csv.reader([text]))
            if len(row) != width:
                raise ValidationError(
                    plan.file, line_number, None, text.rstrip("\r\n")[:200],
                    f"has {len(row)} fields where the header has {width}: a ragged row or a cut-off file",
                )  # fmt: skip
            for position in numeric:
                value = row[position]
                if value in NULL_VALUES:
                    continue
                try:
                    float(value)
                except ValueError:
                    column = plan.header[position]
                    raise ValidationError(plan.file, line_number, column, value, "is not a number") from None


def _canonical(arrow: pa.Table, plan: _Plan, table: str) -> pa.Table:
    lines = arrow.column("source_line")
    columns = {}
    for name, kind in SCHEMA[table].items():
        if name in plan.kinds:
            columns[name] = _convert(arrow.column(name), kind, name, lines, plan)
        else:  # absent in this era
            columns[name] = _missing(kind, arrow.num_rows)
    if "collision_year" not in plan.kinds:  # legacy files
        year, reference = _derive_identity(columns["collision_index"], lines, plan)
        columns["collision_year"], columns["collision_ref_no"] = year, reference
    return pa.table([*columns.values(), lines], names=[*columns, "source_line"])


def _fail_at(plan: _Plan, column: pa.ChunkedArray, bad: pa.ChunkedArray, lines, name: str, problem: str):
    first = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
    raise ValidationError(plan.file, lines[first].as_py(), name, column[first].as_py(), problem)


def _convert(column: pa.ChunkedArray, kind: str, name: str, lines: pa.ChunkedArray, plan: _Plan):
    if kind in (FLOAT, TEXT, TIME):
        return column
    if kind == INT and column.type == pa.int32():
        # DfT writes -1 for missing codes, so most columns have no blanks: no new buffer for those
        return pc.fill_null(column, -1) if column.null_count else column
    if kind == INT:
        bad = pc.or_(pc.not_equal(pc.floor(column), column), pc.greater_equal(pc.abs(column), 2.0**31))
        bad = pc.fill_null(bad, False)
        if pc.any(bad).as_py():
            _fail_at(plan, column, bad, lines, name, "is not a whole number (or is beyond 32-bit integers)")
        return pc.cast(pc.fill_null(column, -1.0), pa.int32())
    # DATE: DD/MM/YYYY exactly. Parsed per distinct value; the round trip rejects dates that strptime
    # rolls over (31/02 -> 02/03) and other layouts.
    encoded = pc.dictionary_encode(column).combine_chunks()
    distinct = encoded.dictionary
    parsed = pc.strptime(distinct, format="%d/%m/%Y", unit="s", error_is_null=True)
    valid = pc.fill_null(pc.equal(pc.strftime(parsed, format="%d/%m/%Y"), distinct), False)
    bad = pc.fill_null(pc.invert(pc.take(valid, encoded.indices)), True)
    if pc.any(bad).as_py():
        _fail_at(plan, column, pa.chunked_array([bad]), lines, name, "is not a date like 31/12/2024")
    return pc.take(parsed, encoded.indices).cast(pa.timestamp("ns"))


def _missing(kind: str, rows: int) -> pa.Array:
    if kind == INT:
        return pa.array(np.full(rows, -1, dtype=np.int32))
    if kind == FLOAT:
        return pa.array(np.full(rows, np.nan))
    return pa.nulls(rows, pa.timestamp("ns") if kind == DATE else pa.string())


def _derive_identity(index: pa.ChunkedArray, lines: pa.ChunkedArray, plan: _Plan):
    """Legacy files have no year or reference column: the index is the year then the reference."""
    year = pc.utf8_slice_codeunits(index, 0, 4)
    bad = pc.invert(pc.fill_null(pc.match_substring_regex(year, r"^\d{4}$"), False))
    if pc.any(bad).as_py():
        _fail_at(plan, index, bad, lines, "collision_index", "does not start with a four-digit year")
    return pc.cast(year, pa.int32()), pc.utf8_slice_codeunits(index, 4)


# --- one year, all three tables -------------------------------------------------------------------------------


@dataclass
class YearData:
    """A year's three tables in canonical columns, where they came from, and what validation found.

    `raw` holds the Arrow tables by table name; `collisions`, `vehicles` and `casualties` are their
    DataFrames, made when first asked for.
    """

    year: int
    sources: dict[str, Source]
    raw: dict[str, RawTable]
    links: Links
    findings: list[Finding]

    @functools.cached_property
    def collisions(self) -> pd.DataFrame:
        return to_frame(self.raw["collision"])

    @functools.cached_property
    def vehicles(self) -> pd.DataFrame:
        return to_frame(self.raw["vehicle"])

    @functools.cached_property
    def casualties(self) -> pd.DataFrame:
        return to_frame(self.raw["casualty"])


def read_year(year: int, sources: dict[str, Source], base_url: str = "") -> YearData:
    """Read and validate the year's files; raises `ValidationError` on a fatal problem.

    A single-year file is read whole, so that validation catches rows of another year in it; a
    multi-year file is streamed and filtered to `year`. `base_url` only words the error for a year
    that a multi-year file does not hold.
    """
    tables = {
        table: read_raw(source.path, table, year if source.combined else None, file=source.name)
        for table, source in sources.items()
    }
    if not len(tables["collision"]):
        where = base_url or sources["collision"].url
        raise YearNotPublished(f"year {year} is not published at {where}: {sources['collision'].url} has no rows")
    links = find_links(tables["collision"], tables["vehicle"], tables["casualty"])
    findings = validate_tables(year, tables["collision"], tables["vehicle"], tables["casualty"], links)
    return YearData(year, sources, tables, links, findings)


def load_year(base_url: str, year: int, cache_dir: Path, *, progress: bool = True) -> YearData:
    """`fetch_year` then `read_year`: one call per year for a notebook that needs no checksum step."""
    return read_year(year, fetch_year(base_url, year, cache_dir, progress=progress), base_url)
