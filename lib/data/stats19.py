"""STATS19 files: find them, download them, and read any era into one canonical schema.

Finding a year's file. DfT renamed its files over time (SCHEMA.md section 1). For a (year, table) the
candidates are tried in this order; "not found" (HTTP 404, or no such file) moves to the next one:

1. `dft-road-casualty-statistics-{collision,vehicle,casualty}-YYYY.csv`: current single-year files (2019 on);
2. `dft-road-casualty-statistics-accident-YYYY.csv`: the older collision name that mirrors still carry;
3. `dft-road-casualty-statistics-{table}-1979-latest-published-year.csv`: every year in one file,
   read as a stream of batches and filtered to the year, never held whole in memory.

Only when every candidate is missing does `fetch` raise `YearNotPublished` ("year 2031 is not published
at <base url>"). A host name that does not resolve fails at once (`HostNotFound`: no retry heals it;
the message points at synthetic data and mirrors). Other HTTP failures are retried with exponential
backoff when transient (connection errors, timeouts, cut transfers, 429 and 5xx; `Retry-After` is
honoured) and reported otherwise.

Downloads stream to `<cache_dir>/<name>.part` with a progress bar and are renamed when complete. A
cached copy is revalidated with a conditional GET (ETag / Last-Modified, saved next to it), so the
multi-gigabyte combined file is downloaded once, not once per year. `file://` URLs are read in place.
`Source.sha256` (or `sha256_file`) is the checksum the lake compares before writing: the rule is
"no write when the lake already holds the same bytes".

Reading. `read_table` maps the three header eras (legacy CamelCase, `accident_*` snake case, the 2024
`collision_*` specification) to the canonical 2024 names (`SCHEMA`): a UTF-8 BOM is skipped, index and
reference columns stay text (leading zeros and letters kept), codes become int32 (blank -> -1),
coordinates float64, `date` (DD/MM/YYYY) datetime64, `time` stays text (HH:MM, or missing). Files
published before the 2024 specification hold the historic codes under the plain names
(`junction_detail`, ...): those are renamed to their `*_historic` twins (`HISTORIC_TWINS`), and the
2024-coded column is then absent (-1). Absent optional columns are filled as missing and columns
outside the schema are dropped; both are listed in `DataFrame.attrs` for `lib.data.validate` to report.
Each row keeps its `source_line` (the header is line 1) so that later errors can point at it.

Problems found while reading are fatal (`lib.data.validate.ValidationError`, naming file, line, column and
value): a missing required column, a ragged row or truncated file (one that does not end with a line
break), a non-numeric value in a numeric column, an unparseable date. A file cut exactly at a line
break looks complete; the count checks in `lib.data.validate` then report the missing rows. The checks
across rows and tables live in `lib.data.validate`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import requests
from tqdm import tqdm

from lib.errors import NeedsAction
from lib.data.validate import Finding, ValidationError, validate_year

logger = logging.getLogger(__name__)

TABLES = ("collision", "vehicle", "casualty")
FILE_PREFIX = "dft-road-casualty-statistics-"
COMBINED_SUFFIX = "1979-latest-published-year"

TEXT, FLOAT, INT, DATE, TIME = "text", "float", "int", "date", "time"

# Canonical columns: the 2024 specification's headers, in its order, plus two columns of older eras.
SCHEMA: dict[str, dict[str, str]] = {
    "collision": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT,
        "location_easting_osgr": FLOAT, "location_northing_osgr": FLOAT, "longitude": FLOAT, "latitude": FLOAT,
        "police_force": INT, "collision_severity": INT, "number_of_vehicles": INT, "number_of_casualties": INT,
        "date": DATE, "day_of_week": INT, "time": TIME, "local_authority_district": INT,
        "local_authority_ons_district": TEXT, "local_authority_highway": TEXT,
        "local_authority_highway_current": TEXT, "first_road_class": INT, "first_road_number": INT,
        "road_type": INT, "speed_limit": INT, "junction_detail_historic": INT, "junction_detail": INT,
        "junction_control": INT, "second_road_class": INT, "second_road_number": INT,
        "pedestrian_crossing_human_control_historic": INT, "pedestrian_crossing_physical_facilities_historic": INT,
        "pedestrian_crossing": INT, "light_conditions": INT, "weather_conditions": INT,
        "road_surface_conditions": INT, "special_conditions_at_site": INT, "carriageway_hazards_historic": INT,
        "carriageway_hazards": INT, "urban_or_rural_area": INT, "did_police_officer_attend_scene_of_accident": INT,
        "trunk_road_flag": INT, "lsoa_of_accident_location": TEXT, "enhanced_severity_collision": INT,
        "collision_injury_based": INT, "collision_adjusted_severity_serious": FLOAT,
        "collision_adjusted_severity_slight": FLOAT,
    },
    "vehicle": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT, "vehicle_reference": INT,
        "vehicle_type": INT, "towing_and_articulation": INT, "vehicle_manoeuvre_historic": INT,
        "vehicle_manoeuvre": INT, "vehicle_direction_from": INT, "vehicle_direction_to": INT,
        "vehicle_location_restricted_lane_historic": INT, "vehicle_location_restricted_lane": INT,
        "junction_location": INT, "skidding_and_overturning": INT, "hit_object_in_carriageway": INT,
        "vehicle_leaving_carriageway": INT, "hit_object_off_carriageway": INT, "first_point_of_impact": INT,
        "vehicle_left_hand_drive": INT, "journey_purpose_of_driver_historic": INT,
        "journey_purpose_of_driver": INT, "sex_of_driver": INT, "age_of_driver": INT, "age_band_of_driver": INT,
        "engine_capacity_cc": INT, "propulsion_code": INT, "age_of_vehicle": INT, "generic_make_model": TEXT,
        "driver_imd_decile": INT, "lsoa_of_driver": TEXT, "escooter_flag": INT, "driver_distance_banding": INT,
        "driver_home_area_type": INT,
    },
    "casualty": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT, "vehicle_reference": INT,
        "casualty_reference": INT, "casualty_class": INT, "sex_of_casualty": INT, "age_of_casualty": INT,
        "age_band_of_casualty": INT, "casualty_severity": INT, "pedestrian_location": INT,
        "pedestrian_movement": INT, "car_passenger": INT, "bus_or_coach_passenger": INT,
        "pedestrian_road_maintenance_worker": INT, "casualty_type": INT, "casualty_imd_decile": INT,
        "lsoa_of_casualty": TEXT, "enhanced_casualty_severity": INT, "casualty_injury_based": INT,
        "casualty_adjusted_severity_serious": FLOAT, "casualty_adjusted_severity_slight": FLOAT,
        "casualty_distance_banding": INT, "casualty_home_area_type": INT,
    },
}  # fmt: skip
OLDER_ERA_COLUMNS = frozenset({"driver_home_area_type", "casualty_home_area_type"})

# Plain (pre-2024 file) name -> its historic twin in the 2024 specification.
HISTORIC_TWINS = {
    "junction_detail": "junction_detail_historic",
    "pedestrian_crossing_human_control": "pedestrian_crossing_human_control_historic",
    "pedestrian_crossing_physical_facilities": "pedestrian_crossing_physical_facilities_historic",
    "carriageway_hazards": "carriageway_hazards_historic",
    "vehicle_manoeuvre": "vehicle_manoeuvre_historic",
    "vehicle_location_restricted_lane": "vehicle_location_restricted_lane_historic",
    "journey_purpose_of_driver": "journey_purpose_of_driver_historic",
}

# Header names (after lower-casing) that differ from the canonical ones (SCHEMA.md section 2).
ALIASES = {
    "accident_index": "collision_index",
    "accident_year": "collision_year",
    "accident_reference": "collision_ref_no",
    "accident_ref_no": "collision_ref_no",
    "collision_reference": "collision_ref_no",
    "accident_severity": "collision_severity",
    "did_police_officer_attend_scene_of_collision": "did_police_officer_attend_scene_of_accident",
    "lsoa_of_collision_location": "lsoa_of_accident_location",
    "enhanced_collision_severity": "enhanced_severity_collision",
    "collision_adjusted_serious": "collision_adjusted_severity_serious",
    "collision_adjusted_slight": "collision_adjusted_severity_slight",
    "casualty_adjusted_serious": "casualty_adjusted_severity_serious",
    "casualty_adjusted_slight": "casualty_adjusted_severity_slight",
    "was_vehicle_left_hand_drive": "vehicle_left_hand_drive",
}

# A file without one of these (or its historic twin) is the wrong file: fatal.
REQUIRED = {
    "collision": (
        "collision_index", "collision_severity", "date", "time", "number_of_vehicles", "number_of_casualties",
        "police_force", "first_road_class", "road_type", "speed_limit", "junction_detail", "junction_control",
        "light_conditions", "weather_conditions", "road_surface_conditions", "urban_or_rural_area",
    ),
    "vehicle": ("collision_index", "vehicle_reference", "vehicle_type", "vehicle_manoeuvre"),
    "casualty": ("collision_index", "vehicle_reference", "casualty_reference", "casualty_class", "casualty_severity"),
}  # fmt: skip

NULL_VALUES = ["", "NULL", "null", "NA", "N/A"]
DEFAULT_BLOCK_SIZE = 16 << 20
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message names the URL."""


class HostNotFound(DownloadError, NeedsAction):
    """The base URL's host name does not resolve; retrying will not change that."""


class NotFound(DownloadError):
    """The server says the file does not exist (HTTP 404, or no such local file)."""


class YearNotPublished(DownloadError):
    """No candidate file holds the requested year."""


# --- where the files are -------------------------------------------------------------------------------------


def combined_file_name(table: str) -> str:
    return f"{FILE_PREFIX}{table}-{COMBINED_SUFFIX}.csv"


def candidate_files(year: int, table: str) -> list[tuple[str, bool]]:
    """(file name, holds many years) in the order to try them."""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not one of {TABLES}")
    names = [(f"{FILE_PREFIX}{table}-{year}.csv", False)]
    if table == "collision":
        names.append((f"{FILE_PREFIX}accident-{year}.csv", False))
    names.append((combined_file_name(table), True))
    return names


def file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + name


@dataclass(frozen=True)
class Source:
    """One downloaded (or local) published file."""

    year: int
    table: str
    url: str
    path: Path
    combined: bool  # holds many years: rows must be filtered to `year`

    @property
    def name(self) -> str:
        """The published file name, as the lake stores it."""
        return self.path.name

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file. Remembered while the file's size and mtime stay the same: a combined
    file of all years is checked once for every year it supplies, and it can be gigabytes."""
    stat = Path(path).stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    base_url: str,
    year: int,
    table: str,
    cache_dir: Path,
    *,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Source:
    """The first candidate file for (year, table) that exists, downloaded into `cache_dir`."""
    tried = []
    for name, combined in candidate_files(year, table):
        url = file_url(base_url, name)
        try:
            path = download(url, Path(cache_dir), progress=progress, retries=retries, backoff=backoff, timeout=timeout)
        except NotFound:
            tried.append(name)
            continue
        logger.info("The %s table for %d comes from %s.", table, year, url)
        return Source(year=year, table=table, url=url, path=path, combined=combined)
    raise YearNotPublished(
        f"year {year} is not published at {base_url}: no {table} file found (tried {', '.join(tried)})"
    )


def download(
    url: str,
    cache_dir: Path,
    *,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """A local path holding the bytes at `url`: `file://` in place, http(s) downloaded into `cache_dir`."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        path = Path(url2pathname(unquote(urlparse(url).path)))
        if not path.is_file():
            raise NotFound(f"{url} does not exist")
        return path
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http, https and file URLs are supported")
    cache_dir.mkdir(parents=True, exist_ok=True)
    return _download_http(url, cache_dir / Path(urlparse(url).path).name, progress, retries, backoff, timeout)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _download_http(url: str, dest: Path, progress: bool, retries: int, backoff: float, timeout: float) -> Path:
    meta_path = dest.with_name(dest.name + ".meta.json")
    # identity: the bytes on disk must be the published bytes, not a re-encoded transfer
    headers = {"Accept-Encoding": "identity"}
    if dest.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("url") == url:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            return _get(url, dest, part, meta_path, headers, progress, timeout)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _Transient) as error:  # fmt: skip
            part.unlink(missing_ok=True)
            if _name_not_resolved(error):
                host = urlparse(url).hostname
                raise HostNotFound(
                    f"{url}: the host name {host} did not resolve ({error.__class__.__name__}), so nothing was "
                    f"downloaded. Without access to {host}, use synthetic data (`make demo DEMO_DATA=synthetic`) "
                    "or a mirror laid out like DfT's: STATS19_BASE_URL=file:///path/to/road-accidents-safety-data/ "
                    "in .env"
                ) from error
            if attempt == retries:
                raise DownloadError(f"{url}: giving up after {retries + 1} attempts; last error: {error}") from error
            delay = getattr(error, "retry_after", None) or backoff * 2**attempt
            logger.warning("Downloading %s failed (%s); retrying in %.1f s.", url, error, delay)
            time.sleep(delay)
            attempt += 1


def _name_not_resolved(error: BaseException) -> bool:
    """Whether a DNS lookup failure lies anywhere in the exception's chain (requests wraps urllib3 wraps socket)."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None),
                    *(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))]
    return False


def _get(url: str, dest: Path, part: Path, meta_path: Path, headers: dict, progress: bool, timeout: float) -> Path:
    """One GET: 304 keeps the cached copy, 200 streams to `part` and renames it when complete."""
    with requests.get(url, stream=True, headers=headers, timeout=timeout) as response:
        if response.status_code == 304:
            logger.info("%s is unchanged since the cached download; using %s.", url, dest)
            return dest
        if response.status_code == 404:
            raise NotFound(f"{url} was not found (HTTP 404)")
        if response.status_code in TRANSIENT_STATUS or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}", _retry_after(response))
        if not response.ok:
            raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
        expected = int(response.headers.get("Content-Length") or 0) or None
        written = 0
        with open(part, "wb") as out, tqdm(
            total=expected, unit="B", unit_scale=True, desc=dest.name, disable=not progress, mininterval=1
        ) as bar:
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        if expected is not None and written != expected:
            raise _Transient(f"the transfer stopped after {written:,} of {expected:,} bytes")
        os.replace(part, dest)
        validators = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        meta_path.write_text(json.dumps({"url": url, **validators}))
        return dest


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER) if value.replace(".", "", 1).isdigit() else None


# --- reading ----------------------------------------------------------------------------------------------------


def canonical_name(header: str) -> str:
    """A header of any era -> its canonical name (before the historic-twin rename)."""
    name = header.strip().lstrip("\ufeff").lower()
    name = re.sub(r"^1st_", "first_", re.sub(r"^2nd_", "second_", name))
    name = re.sub(r"[()?]", "", name.replace("-", "_"))
    return ALIASES.get(name, name)


def canonical_columns(header: list[str]) -> list[str]:
    """Canonical names for a whole header, with pre-2024 plain names moved to their historic twins.

    A file is pre-2024 for a column when it has the plain name but not the `_historic` twin: its codes
    are then the historic ones.
    """
    names = [canonical_name(column) for column in header]
    present = set(names)
    return [
        HISTORIC_TWINS[name] if name in HISTORIC_TWINS and HISTORIC_TWINS[name] not in present else name
        for name in names
    ]


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
    """Read a published file of any era into canonical columns, keeping only `years` if given.

    Without `years` the whole file is parsed at once (in parallel). With `years` it is read as a
    stream of `block_size` batches filtered one by one, so a multi-year file costs memory only for the
    rows kept. `file` names the file in errors (default: the file name). The result's `attrs` hold
    `source_file`, `table`, `absent_columns` (filled as missing) and `dropped_columns` (not in the schema).
    """
    path = Path(path)
    file = file or path.name
    _check_complete(path, file)
    plan = _plan(read_header(path), table, file)
    wanted = None if years is None else ({years} if isinstance(years, int) else set(years))
    arrow = _read_arrow(path, plan, wanted, block_size)
    frame = _to_frame(arrow, plan, table)
    frame.attrs.update(source_file=file, table=table, absent_columns=plan.absent, dropped_columns=plan.dropped)
    logger.info("Read %s rows of the %s table from %s.", f"{len(frame):,}", table, file)
    return frame


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
    read_options = pacsv.ReadOptions(column_names=column_names, skip_rows=1, block_size=block_size)
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


def _to_frame(arrow: pa.Table, plan: _Plan, table: str) -> pd.DataFrame:
    lines = arrow.column("source_line")
    columns, names = [], []
    for name, kind in SCHEMA[table].items():
        if name in plan.kinds:
            columns.append(_convert(arrow.column(name), kind, name, lines, plan))
        else:  # absent in this era; legacy files' year and reference are derived from the index below
            columns.append(_missing(kind, arrow.num_rows))
        names.append(name)
    converted = pa.table([*columns, lines], names=[*names, "source_line"])
    # pyarrow builds pandas' 2-D blocks itself (fast), and they are writable copies, not views of Arrow memory
    frame = converted.to_pandas(types_mapper=_pandas_type)
    if "collision_year" not in plan.kinds:
        _derive_identity(frame, plan)
    return frame


def _pandas_type(arrow_type: pa.DataType):
    return pd.StringDtype("pyarrow") if arrow_type == pa.string() else None


def _fail_at(plan: _Plan, column: pa.ChunkedArray, bad: pa.ChunkedArray, lines, name: str, problem: str):
    first = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
    raise ValidationError(plan.file, lines[first].as_py(), name, column[first].as_py(), problem)


def _convert(column: pa.ChunkedArray, kind: str, name: str, lines: pa.ChunkedArray, plan: _Plan):
    if kind in (FLOAT, TEXT, TIME):
        return column
    if kind == INT and column.type == pa.int32():
        return pc.fill_null(column, -1)
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


def _derive_identity(frame: pd.DataFrame, plan: _Plan) -> None:
    """Legacy files have no year or reference column: the index is the year then the reference."""
    index = frame["collision_index"]
    year = pd.to_numeric(index.str.slice(0, 4), errors="coerce")
    if year.isna().any():
        first = int(np.argmax(year.isna().to_numpy()))
        raise ValidationError(
            plan.file, int(frame["source_line"].iat[first]), "collision_index", index.iat[first],
            "does not start with a four-digit year",
        )  # fmt: skip
    frame["collision_year"] = year.to_numpy(dtype=np.int32)
    frame["collision_ref_no"] = index.str.slice(4)


# --- one year, all three tables -------------------------------------------------------------------------------


@dataclass
class YearData:
    """A year's three tables in canonical columns, where they came from, and what validation found."""

    year: int
    sources: dict[str, Source]
    collisions: pd.DataFrame
    vehicles: pd.DataFrame
    casualties: pd.DataFrame
    findings: list[Finding]


def fetch_year(base_url: str, year: int, cache_dir: Path, *, progress: bool = True) -> dict[str, Source]:
    """The year's three published files (`fetch` per table); raises `YearNotPublished` if one is missing."""
    return {table: fetch(base_url, year, table, cache_dir, progress=progress) for table in TABLES}


def read_year(year: int, sources: dict[str, Source], base_url: str = "") -> YearData:
    """Read and validate the year's files; raises `ValidationError` on a fatal problem.

    A single-year file is read whole, so that validation catches rows of another year in it; a
    multi-year file is streamed and filtered to `year`. `base_url` only words the error for a year
    that a multi-year file does not hold.
    """
    tables = {
        table: read_table(source.path, table, year if source.combined else None, file=source.name)
        for table, source in sources.items()
    }
    if tables["collision"].empty:
        where = base_url or sources["collision"].url
        raise YearNotPublished(f"year {year} is not published at {where}: {sources['collision'].url} has no rows")
    findings = validate_year(year, tables["collision"], tables["vehicle"], tables["casualty"])
    return YearData(year, sources, tables["collision"], tables["vehicle"], tables["casualty"], findings)


def load_year(base_url: str, year: int, cache_dir: Path, *, progress: bool = True) -> YearData:
    """`fetch_year` then `read_year`: one call per year for a notebook that needs no checksum step."""
    return read_year(year, fetch_year(base_url, year, cache_dir, progress=progress), base_url)
