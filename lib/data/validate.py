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

`validate_year` repairs the frames in place and returns the findings; `findings_frame` turns them
into a table a notebook can display.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lib.data.codes import LABELS, MISSING, dft_day_of_week

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
    columns = list(Finding.__dataclass_fields__)
    return pd.DataFrame([asdict(finding) for finding in findings], columns=columns)


def validate_year(
    year: int, collisions: pd.DataFrame, vehicles: pd.DataFrame, casualties: pd.DataFrame
) -> list[Finding]:
    """Check one year's tables; raise `ValidationError` on a fatal problem, repair and report the rest.

    Repairs happen in place (unknown codes -> -1, malformed times -> missing), so the frames passed in
    are the ones to curate afterwards.
    """
    findings: list[Finding] = []
    for frame in (collisions, vehicles, casualties):
        findings += _schema_findings(frame)
        _check_keys(frame, year)
        findings += _check_codes(frame)
    findings += _check_collision_fields(collisions)
    findings += _check_links(collisions, vehicles, casualties)
    for finding in findings:
        logger.info(
            "%s: %s%s: %s (e.g. %s); %s.", finding.file, finding.check,
            f" in {finding.column}" if finding.column else "", f"{finding.count:,}", finding.examples, finding.action,
        )  # fmt: skip
    return findings


def _file(frame: pd.DataFrame) -> str:
    return frame.attrs.get("source_file", frame.attrs.get("table", "?"))


def _finding(frame, check, column, mask_or_count, examples, action, limit: int | None = EXAMPLES) -> Finding:
    count = int(np.count_nonzero(mask_or_count)) if isinstance(mask_or_count, np.ndarray) else mask_or_count
    shown = ", ".join(str(example) for example in list(examples)[:limit])
    return Finding(_file(frame), frame.attrs.get("table", "?"), check, column, count, shown, action)


def _fail(frame: pd.DataFrame, mask: np.ndarray, column: str, problem: str) -> None:
    first = int(np.argmax(mask))
    value = frame[column].iloc[first]
    line = int(frame["source_line"].iloc[first]) if "source_line" in frame else None
    raise ValidationError(_file(frame), line, column, value.item() if hasattr(value, "item") else value, problem)


def _schema_findings(frame: pd.DataFrame) -> list[Finding]:
    findings = []
    absent = frame.attrs.get("absent_columns") or []
    dropped = frame.attrs.get("dropped_columns") or []
    if absent:
        findings.append(
            _finding(frame, "columns absent in this era", None, len(absent), absent, "filled as missing", None)
        )
    if dropped:
        findings.append(_finding(frame, "columns outside the schema", None, len(dropped), dropped, "dropped", None))
    return findings


def _check_keys(frame: pd.DataFrame, year: int) -> None:
    index = frame["collision_index"]
    empty = (index.isna() | (index.str.strip() == "")).to_numpy(dtype=bool, na_value=True)
    if empty.any():
        _fail(frame, empty, "collision_index", "is empty")
    other_year = frame["collision_year"].to_numpy() != year
    if other_year.any():
        _fail(frame, other_year, "collision_year", f"is not {year}, the year being read")
    for reference in REFERENCES[frame.attrs.get("table", "collision")]:
        below_one = frame[reference].to_numpy() < 1
        if below_one.any():
            _fail(frame, below_one, reference, "is not a reference number (1 or more)")


def is_code(values: np.ndarray, codes) -> np.ndarray:
    """Vectorised `value in codes` for small integer code lists (a lookup table, not a sort)."""
    codes = np.asarray(list(codes))
    low, high = codes.min(), codes.max()
    table = np.zeros(high - low + 1, dtype=bool)
    table[codes - low] = True
    inside = (values >= low) & (values <= high)
    return inside & table[np.where(inside, values - low, 0)]


def _check_codes(frame: pd.DataFrame) -> list[Finding]:
    findings = []
    for column in frame.columns:
        if column not in LABELS:
            continue
        values = frame[column].to_numpy()
        unknown = ~is_code(values, [*LABELS[column], MISSING])
        if not unknown.any():
            continue
        if column in TARGET_CODE_COLUMNS:
            _fail(frame, unknown, column, f"is not a code of the DfT data guide ({sorted(LABELS[column])})")
        examples = pd.Series(values[unknown]).value_counts().index
        findings.append(_finding(frame, "unknown code", column, unknown, examples, "set to -1 (missing)"))
        frame[column] = np.where(unknown, MISSING, values).astype(values.dtype)
    return findings


def _check_collision_fields(collisions: pd.DataFrame) -> list[Finding]:
    findings = []
    time = pa.array(collisions["time"].array)
    bad_time = pc.invert(pc.fill_null(pc.match_substring_regex(time, TIME_PATTERN), True))
    bad_time = bad_time.to_numpy(zero_copy_only=False)
    if bad_time.any():
        findings.append(_finding(collisions, "time is not HH:MM", "time", bad_time,
                                 collisions["time"][bad_time].unique(), "set to missing"))  # fmt: skip
        collisions.loc[bad_time, "time"] = pd.NA
    dates = collisions["date"]
    outside = (dates.dt.year != collisions["collision_year"]).to_numpy()
    if outside.any():
        findings.append(_finding(collisions, "date outside the collision year", "date", outside,
                                 collisions["collision_index"][outside], "kept"))  # fmt: skip
    dft_day = dft_day_of_week(dates.dt.dayofweek.to_numpy())
    wrong_day = (collisions["day_of_week"].to_numpy() != dft_day) & (collisions["day_of_week"].to_numpy() != MISSING)
    if wrong_day.any():
        findings.append(_finding(collisions, "day_of_week disagrees with date", "day_of_week", wrong_day,
                                 collisions["collision_index"][wrong_day], "kept; features use the date"))  # fmt: skip
    prefix = pc.utf8_slice_codeunits(pa.array(collisions["collision_index"].array, pa.string()), 0, 4)
    year_text = pc.cast(pa.array(collisions["collision_year"].to_numpy()), pa.string())
    prefix = pc.invert(pc.fill_null(pc.equal(prefix, year_text), False)).to_numpy(zero_copy_only=False)
    if prefix.any():
        findings.append(_finding(collisions, "index does not start with its year", "collision_index", prefix,
                                 collisions["collision_index"][prefix], "kept"))  # fmt: skip
    return findings


def positions(keys: pd.Series, lookup: pd.Series) -> np.ndarray:
    """For each text key, its row position in `lookup` (unique keys), or -1 when it is not there.

    E.g. `positions(vehicles["collision_index"], collisions["collision_index"])`: each vehicle's collision row.
    """
    found = pc.index_in(pa.array(keys.array, pa.string()), value_set=pa.array(lookup.array, pa.string()))
    return pc.fill_null(found, -1).to_numpy()


def _fail_duplicates(frame: pd.DataFrame, duplicated: np.ndarray) -> None:
    if duplicated.any():
        references = REFERENCES[frame.attrs.get("table", "collision")]
        same = f" with the same {' and '.join(references)}" if references else ""
        _fail(frame, duplicated, "collision_index", f"appears twice{same}")


def _check_links(collisions: pd.DataFrame, vehicles: pd.DataFrame, casualties: pd.DataFrame) -> list[Finding]:
    findings = []
    n = len(collisions)
    first_seen = positions(collisions["collision_index"], collisions["collision_index"])
    _fail_duplicates(collisions, first_seen != np.arange(n))
    child_rows = {}
    for child, count_column in ((vehicles, "number_of_vehicles"), (casualties, "number_of_casualties")):
        parent = positions(child["collision_index"], collisions["collision_index"])
        orphan = parent < 0
        if orphan.any():
            _fail(child, orphan, "collision_index", f"has no collision in {_file(collisions)}")
        key = parent.astype(np.int64)
        for reference in REFERENCES[child.attrs.get("table")]:
            key = key << 20 | child[reference].to_numpy()
        _fail_duplicates(child, pd.Series(key).duplicated().to_numpy())
        child_rows[count_column] = parent
        counted = np.bincount(parent, minlength=n)
        mismatch = collisions[count_column].to_numpy() != counted
        if mismatch.any():
            check = f"{count_column} differs from the {child.attrs.get('table')} rows"
            examples = collisions["collision_index"][mismatch]
            findings.append(_finding(collisions, check, count_column, mismatch, examples, "kept"))
    # Casualty -> vehicle, on (collision position, vehicle_reference).
    vehicle_keys = child_rows["number_of_vehicles"].astype(np.int64) << 20 | vehicles["vehicle_reference"].to_numpy()
    casualty_parent = child_rows["number_of_casualties"]
    casualty_keys = casualty_parent.astype(np.int64) << 20 | casualties["vehicle_reference"].to_numpy()
    no_vehicle = ~pd.Series(casualty_keys).isin(vehicle_keys).to_numpy()
    if no_vehicle.any():
        findings.append(_finding(casualties, "casualty's vehicle is not in the vehicle table", "vehicle_reference",
                                 no_vehicle, casualties["collision_index"][no_vehicle], "kept"))  # fmt: skip
    worst = np.full(n, 9, dtype=np.int32)
    np.minimum.at(worst, casualty_parent, casualties["casualty_severity"].to_numpy())
    has_casualty = worst != 9
    severity_differs = has_casualty & (collisions["collision_severity"].to_numpy() != worst)
    if severity_differs.any():
        findings.append(_finding(collisions, "collision severity is not the worst casualty severity",
                                 "collision_severity", severity_differs,
                                 collisions["collision_index"][severity_differs], "kept"))  # fmt: skip
    return findings
