"""Validation of one year's STATS19 tables (canonical columns, as `lib.data.stats19.read_table` returns them).

Fatal: `ValidationError`, whose message names the file, line, column and value. Nothing is written
from a year that fails. A problem is fatal when the rows cannot be trusted or linked:
* while reading (`lib.data.stats19`): a missing required column, a ragged row or cut-off file, a
  non-numeric value in a numeric column, a date that is not DD/MM/YYYY;
* an unknown code in a target column (`collision_severity`, `casualty_severity`);
* a key problem: an empty `collision_index`, a row of another year than the one read, a duplicate
  collision, vehicle or casualty key, a vehicle or casualty reference below 1;
* an orphan: a vehicle or casualty whose collision is not in the collision table.

Reported: a `Finding` per (file, check, column) with a count and examples; the data is repaired as
stated in `action` and the year is kept:
* an unknown code in any other coded column: set to -1 (missing);
* a `time` that is not HH:MM: set to missing;
* `number_of_vehicles` / `number_of_casualties` different from the child rows;
* a collision severity that is not its worst casualty's severity;
* a casualty whose vehicle is not in the vehicle table;
* a date outside the collision year, a `day_of_week` that disagrees with the date, an index that
  does not start with its year;
* columns the file's era does not have (filled as missing) and columns outside the schema (dropped).

`validate_tables` checks the Arrow tables `lib.data.stats19` reads (`lib.data.tables.RawTable`), swapping
in repaired columns, and returns the findings; `validate_year` does the same for DataFrames, repairing
them in place; `findings_frame` turns the findings into a table a notebook can display.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.data.codes import LABELS, MISSING, dft_day_of_week
from lib.data.schema import TABLES
from lib.data.tables import RawTable, from_frame

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

TARGET_CODE_COLUMNS = frozenset({"collision_severity", "casualty_severity"})
TIME_PATTERN = r"^([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"
EXAMPLES = 3
# Besides collision_index, what makes a row unique.
REFERENCES = {
    "collision": [],
    "vehicle": ["vehicle_reference"],
    "casualty": ["vehicle_reference", "casualty_reference"],
}


class ValidationError(ValueError):
    """Bad input that stops ingestion; names the file, line (the header is line 1), column and value."""

    def __init__(self, file: str, line: int | None, column: str | None, value: object, problem: str):
        self.file, self.line, self.column, self.value, self.problem = file, line, column, value, problem
        where = ", ".join(
            part
            for part in (file, f"line {line}" if line else "", f"column {column}" if column else "")
            if part
        )
        shown = "" if value is None else f" value {value!r}"
        super().__init__(f"{where}:{shown} {problem}")


@dataclass(frozen=True)
class Finding:
    """A counted, non-fatal problem and what was done about it."""

    file: str
    table: str
    check: str
    column: str | None
    count: int  # rows affected; columns for the two schema checks
    examples: str
    action: str


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    """The findings as a table for notebooks and reports."""
    import pandas as pd

    columns = list(Finding.__dataclass_fields__)
    return pd.DataFrame([asdict(finding) for finding in findings], columns=columns)


@dataclass(frozen=True)
class Links:
    """Each vehicle's and each casualty's row in the collision table (-1 where it has none)."""

    vehicle_rows: np.ndarray
    casualty_rows: np.ndarray


def find_links(collisions: RawTable, vehicles: RawTable, casualties: RawTable) -> Links:
    """Found once per year: validation checks them, curation aggregates along them."""
    index = collisions["collision_index"]
    return Links(positions(vehicles["collision_index"], index), positions(casualties["collision_index"], index))


def validate_year(
    year: int, collisions: pd.DataFrame, vehicles: pd.DataFrame, casualties: pd.DataFrame
) -> list[Finding]:
    """`validate_tables` for DataFrames: the repairs are made in the frames passed in, so they are the
    ones to curate afterwards."""
    frames = (collisions, vehicles, casualties)
    tables = [from_frame(frame, table) for frame, table in zip(frames, TABLES, strict=True)]
    findings = validate_tables(year, *tables)
    for frame, table in zip(frames, tables, strict=True):
        for column in table.repaired:
            frame[column] = table[column].to_pandas().astype(frame[column].dtype).array
    return findings


def validate_tables(year: int, collisions: RawTable, vehicles: RawTable, casualties: RawTable,
                    links: Links | None = None) -> list[Finding]:
    """Check one year's tables; raise `ValidationError` on a fatal problem, repair and report the rest.

    Repaired columns (unknown codes -> -1, malformed times -> missing) replace the tables' own, so the
    tables passed in are the ones to curate afterwards. `links` (`find_links`) is found if not given.
    """
    findings: list[Finding] = []
    for table in (collisions, vehicles, casualties):
        findings += _schema_findings(table)
        _check_keys(table, year)
        findings += _check_codes(table)
    findings += _check_collision_fields(collisions)
    findings += _check_links(collisions, vehicles, casualties, links or find_links(collisions, vehicles, casualties))
    for finding in findings:
        logger.info(
            "%s: %s%s: %s (e.g. %s); %s.", finding.file, finding.check,
            f" in {finding.column}" if finding.column else "", f"{finding.count:,}", finding.examples, finding.action,
        )  # fmt: skip
    return findings


def _finding(table: RawTable, check, column, mask_or_count, examples, action, limit: int | None = EXAMPLES) -> Finding:
    count = int(np.count_nonzero(mask_or_count)) if isinstance(mask_or_count, np.ndarray) else mask_or_count
    shown = ", ".join(str(example) for example in list(examples)[:limit])
    return Finding(table.file, table.table, check, column, count, shown, action)


def _fail(table: RawTable, mask: np.ndarray, column: str, problem: str) -> None:
    first = int(np.argmax(mask))
    value = table[column][first].as_py()
    line = table["source_line"][first].as_py() if "source_line" in table else None
    raise ValidationError(table.file, line, column, value, problem)


def _schema_findings(table: RawTable) -> list[Finding]:
    findings = []
    if table.absent_columns:
        findings.append(_finding(table, "columns absent in this era", None, len(table.absent_columns),
                                 table.absent_columns, "filled as missing", None))  # fmt: skip
    if table.dropped_columns:
        findings.append(_finding(table, "columns outside the schema", None, len(table.dropped_columns),
                                 table.dropped_columns, "dropped", None))  # fmt: skip
    return findings


def _check_keys(table: RawTable, year: int) -> None:
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table["collision_index"]), ""), True)
    empty = empty.to_numpy()
    if empty.any():
        _fail(table, empty, "collision_index", "is empty")
    other_year = table["collision_year"].to_numpy() != year
    if other_year.any():
        _fail(table, other_year, "collision_year", f"is not {year}, the year being read")
    for reference in REFERENCES[table.table]:
        below_one = table[reference].to_numpy() < 1
        if below_one.any():
            _fail(table, below_one, reference, "is not a reference number (1 or more)")


def is_code(values: np.ndarray, codes) -> np.ndarray:
    """Vectorised `value in codes` for small integer code lists (a lookup table, not a sort).

    The table has a False slot at each end, and `take` clips every value outside the codes' range onto
    one of them: one subtraction and one gather per value.
    """
    codes = np.asarray(list(codes))
    low, high = int(codes.min()), int(codes.max())
    table = np.zeros(high - low + 3, dtype=bool)
    table[codes - low + 1] = True
    # Values near the int32 limits wrap around in the subtraction, and still land outside the table.
    return np.take(table, values - (low - 1), mode="clip")


def _check_codes(table: RawTable) -> list[Finding]:
    findings = []
    for column in table.columns:
        if column not in LABELS:
            continue
        values = table[column].to_numpy()
        unknown = ~is_code(values, [*LABELS[column], MISSING])
        if not unknown.any():
            continue
        if column in TARGET_CODE_COLUMNS:
            _fail(table, unknown, column, f"is not a code of the DfT data guide ({sorted(LABELS[column])})")
        codes, counts = np.unique(values[unknown], return_counts=True)
        examples = codes[np.argsort(-counts, kind="stable")].tolist()  # the most frequent first
        findings.append(_finding(table, "unknown code", column, unknown, examples, "set to -1 (missing)"))
        table.replace(column, pa.array(np.where(unknown, MISSING, values).astype(values.dtype)))
    return findings


def _check_collision_fields(collisions: RawTable) -> list[Finding]:
    findings = []
    time = collisions["time"]
    bad_time = pc.invert(pc.fill_null(pc.match_substring_regex(time, TIME_PATTERN), True))
    if pc.any(bad_time).as_py():
        examples = pc.unique(time.filter(bad_time)).to_pylist()
        findings.append(_finding(collisions, "time is not HH:MM", "time", bad_time.to_numpy(), examples,
                                 "set to missing"))  # fmt: skip
        collisions.replace("time", pc.if_else(bad_time, pa.scalar(None, time.type), time))
    dates = collisions["date"]
    outside = pc.fill_null(pc.not_equal(pc.year(dates), pc.cast(collisions["collision_year"], pa.int64())), True)
    outside = outside.to_numpy()
    if outside.any():
        findings.append(_finding(collisions, "date outside the collision year", "date", outside,
                                 collisions.first_values("collision_index", outside, EXAMPLES), "kept"))  # fmt: skip
    dft_day = dft_day_of_week(pc.day_of_week(dates).to_numpy())
    day_of_week = collisions["day_of_week"].to_numpy()
    wrong_day = (day_of_week != dft_day) & (day_of_week != MISSING)
    if wrong_day.any():
        findings.append(_finding(collisions, "day_of_week disagrees with date", "day_of_week", wrong_day,
                                 collisions.first_values("collision_index", wrong_day, EXAMPLES),
                                 "kept; features use the date"))  # fmt: skip
    prefix = pc.utf8_slice_codeunits(collisions["collision_index"], 0, 4)
    year_text = pc.cast(collisions["collision_year"], pa.string())
    prefix = pc.invert(pc.fill_null(pc.equal(prefix, year_text), False)).to_numpy()
    if prefix.any():
        findings.append(_finding(collisions, "index does not start with its year", "collision_index", prefix,
                                 collisions.first_values("collision_index", prefix, EXAMPLES), "kept"))  # fmt: skip
    return findings


def positions(keys: pa.ChunkedArray | pa.Array, lookup: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each key, its row position in `lookup` (the first, if `lookup` repeats it), or -1 when it is not there.

    E.g. `positions(vehicles["collision_index"], collisions["collision_index"])`: each vehicle's collision row.
    """
    if isinstance(lookup, pa.ChunkedArray):
        lookup = lookup.combine_chunks()
    return pc.fill_null(pc.index_in(keys, value_set=lookup), -1).to_numpy()


def _repeated(keys) -> np.ndarray:
    """True for every row whose key an earlier row has."""
    return positions(keys, keys) != np.arange(len(keys))


def _fail_duplicates(table: RawTable, duplicated: np.ndarray) -> None:
    if duplicated.any():
        references = REFERENCES[table.table]
        same = f" with the same {' and '.join(references)}" if references else ""
        _fail(table, duplicated, "collision_index", f"appears twice{same}")


def _check_links(collisions: RawTable, vehicles: RawTable, casualties: RawTable, links: Links) -> list[Finding]:
    findings = []
    n = len(collisions)
    _fail_duplicates(collisions, _repeated(collisions["collision_index"]))
    for child, parent, count_column in ((vehicles, links.vehicle_rows, "number_of_vehicles"),
                                        (casualties, links.casualty_rows, "number_of_casualties")):  # fmt: skip
        orphan = parent < 0
        if orphan.any():
            _fail(child, orphan, "collision_index", f"has no collision in {collisions.file}")
        key = parent.astype(np.int64)
        for reference in REFERENCES[child.table]:
            key = key << 20 | child[reference].to_numpy()
        _fail_duplicates(child, _repeated(pa.array(key)))
        counted = np.bincount(parent, minlength=n)
        mismatch = collisions[count_column].to_numpy() != counted
        if mismatch.any():
            check = f"{count_column} differs from the {child.table} rows"
            examples = collisions.first_values("collision_index", mismatch, EXAMPLES)
            findings.append(_finding(collisions, check, count_column, mismatch, examples, "kept"))
    # Casualty -> vehicle, on (collision position, vehicle_reference).
    vehicle_keys = links.vehicle_rows.astype(np.int64) << 20 | vehicles["vehicle_reference"].to_numpy()
    casualty_parent = links.casualty_rows
    casualty_keys = casualty_parent.astype(np.int64) << 20 | casualties["vehicle_reference"].to_numpy()
    no_vehicle = ~pc.is_in(pa.array(casualty_keys), value_set=pa.array(vehicle_keys)).to_numpy(zero_copy_only=False)
    if no_vehicle.any():
        findings.append(_finding(casualties, "casualty's vehicle is not in the vehicle table", "vehicle_reference",
                                 no_vehicle, casualties.first_values("collision_index", no_vehicle, EXAMPLES),
                                 "kept"))  # fmt: skip
    worst = np.full(n, 9, dtype=np.int32)
    np.minimum.at(worst, casualty_parent, casualties["casualty_severity"].to_numpy())
    has_casualty = worst != 9
    severity_differs = has_casualty & (collisions["collision_severity"].to_numpy() != worst)
    if severity_differs.any():
        findings.append(_finding(collisions, "collision severity is not the worst casualty severity",
                                 "collision_severity", severity_differs,
                                 collisions.first_values("collision_index", severity_differs, EXAMPLES),
                                 "kept"))  # fmt: skip
    return findings
