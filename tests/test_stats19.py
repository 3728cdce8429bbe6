"""lib.data.download (finding, downloading), lib.data.schema and lib.data.stats19 (reading), lib.data.validate."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.config import ROOT
from lib.data.download import (
    DownloadError,
    HostNotFound,
    YearNotPublished,
    candidate_files,
    combined_file_name,
    fetch,
    sha256_file,
)
from lib.data.schema import SCHEMA, canonical_columns
from lib.data.stats19 import load_year, read_table
from lib.data.synth import generate, write_files
from lib.data.validate import ValidationError, findings_frame, validate_year

# Rows per year in the real mirror (lib/data/README.md, "The mirror"): collisions, vehicles, casualties.
MIRROR_ROWS = {
    2014: (751, 1361, 940),
    2015: (642, 1187, 806),
    2016: (669, 1205, 819),
    2017: (680, 1198, 842),
    2018: (707, 1326, 838),
}


# --- a real HTTP server on 127.0.0.1 serving a temporary folder -----------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    failures: dict[str, int] = {}  # path -> 503s still to send
    statuses: list[tuple[str, int]] = []

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            self.statuses.append((name, 503))
            self.send_error(503, "try again")
            return
        super().do_GET()

    def send_response(self, code, message=None):
        if code != 503:
            self.statuses.append((self.path.rsplit("/", 1)[-1], code))
        super().send_response(code, message)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL, handler class) of a live http.server serving `folder`."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("Handler", (_Handler,), {"failures": {}, "statuses": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/road-accidents-safety-data/", handler
    finally:
        server.shutdown()
        server.server_close()


def _serve(folder: Path) -> Path:
    site = folder / "road-accidents-safety-data"
    site.mkdir(exist_ok=True)
    return site


@pytest.fixture(scope="module")
def small_year(tmp_path_factory) -> Path:
    """A synthetic 2023 year (2024 specification) of 200 collisions."""
    folder = tmp_path_factory.mktemp("small_year")
    write_files(generate([2023], 200, seed=11), folder)
    return folder


def _name(table: str, year: int = 2023) -> str:
    return f"dft-road-casualty-statistics-{table}-{year}.csv"


def _copy_year(source: Path, target: Path) -> dict[str, Path]:
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for table in ("collision", "vehicle", "casualty"):
        paths[table] = target / _name(table)
        paths[table].write_bytes((source / _name(table)).read_bytes())
    return paths


def _rewrite(path: Path, edit) -> None:
    """Apply `edit(rows)` to the CSV rows (header first) and write the file back."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def _read_year(paths: dict[str, Path]):
    tables = {table: read_table(path, table) for table, path in paths.items()}
    return tables, validate_year(2023, tables["collision"], tables["vehicle"], tables["casualty"])


# --- finding and downloading ----------------------------------------------------------------------------------------


def test_candidates_follow_dft_naming_eras():
    assert [name for name, _ in candidate_files(2017, "collision")] == [
        "dft-road-casualty-statistics-collision-2017.csv",
        "dft-road-casualty-statistics-accident-2017.csv",
        "dft-road-casualty-statistics-collision-1979-latest-published-year.csv",
    ]
    assert candidate_files(2017, "vehicle") == [
        ("dft-road-casualty-statistics-vehicle-2017.csv", False),
        ("dft-road-casualty-statistics-vehicle-1979-latest-published-year.csv", True),
    ]


def test_fetch_moves_past_404_to_the_accident_name(http_folder, shared_data):
    folder, base, handler = http_folder
    site = _serve(folder)
    mirror = shared_data / "mirror" / "road-accidents-safety-data"
    for table in ("accident", "vehicle", "casualty"):
        (site / _name(table, 2017)).write_bytes((mirror / _name(table, 2017)).read_bytes())
    source = fetch(base, 2017, "collision", folder.parent / "cache", progress=False)
    assert source.name == "dft-road-casualty-statistics-accident-2017.csv"
    assert not source.combined
    assert (_name("collision", 2017), 404) in handler.statuses
    assert source.sha256 == hashlib.sha256((mirror / source.name).read_bytes()).hexdigest()
    data = load_year(base, 2017, folder.parent / "cache", progress=False)
    assert (len(data.collisions), len(data.vehicles), len(data.casualties)) == MIRROR_ROWS[2017]


def test_a_year_that_does_not_exist_names_the_url(http_folder, small_year):
    folder, base, _ = http_folder
    site = _serve(folder)
    for table in ("collision", "vehicle", "casualty"):
        (site / _name(table)).write_bytes((small_year / _name(table)).read_bytes())
    with pytest.raises(YearNotPublished, match=rf"year 2031 is not published at {base}"):
        fetch(base, 2031, "collision", folder.parent / "cache", progress=False)
    with pytest.raises(YearNotPublished, match="year 2031 is not published"):
        load_year(base, 2031, folder.parent / "cache", progress=False)


def test_transient_errors_are_retried_then_the_bytes_arrive(http_folder, small_year):
    folder, base, handler = http_folder
    site = _serve(folder)
    name = _name("collision")
    (site / name).write_bytes((small_year / name).read_bytes())
    handler.failures[name] = 2
    source = fetch(base, 2023, "collision", folder.parent / "cache", progress=False, backoff=0.01)
    assert [status for file, status in handler.statuses if file == name] == [503, 503, 200]
    assert source.path.read_bytes() == (small_year / name).read_bytes()
    assert not list(source.path.parent.glob("*.part"))


def test_persistent_server_errors_give_up_with_the_url(http_folder, small_year):
    folder, base, handler = http_folder
    site = _serve(folder)
    name = _name("collision")
    (site / name).write_bytes((small_year / name).read_bytes())
    handler.failures[name] = 99
    with pytest.raises(DownloadError, match=rf"{base}{name}: giving up after 3 attempts"):
        fetch(base, 2023, "collision", folder.parent / "cache", progress=False, retries=2, backoff=0.01)


def test_a_host_that_does_not_resolve_fails_at_once_and_points_at_the_offline_ways(tmp_path, caplog):
    base = "https://stats19.invalid/road-accidents-safety-data/"  # .invalid never resolves (RFC 6761)
    with pytest.raises(HostNotFound) as error:
        fetch(base, 2023, "collision", tmp_path / "cache", progress=False, retries=5, backoff=10)
    message = str(error.value)
    assert message.startswith(f"{base}dft-road-casualty-statistics-collision-2023.csv: the host name stats19.invalid")
    assert "DEMO_DATA=synthetic" in message and "STATS19_BASE_URL=file://" in message
    assert not [record for record in caplog.records if "retrying" in record.getMessage()]


def test_a_cached_download_is_revalidated_not_downloaded_again(http_folder, small_year):
    folder, base, handler = http_folder
    site = _serve(folder)
    name = _name("collision")
    (site / name).write_bytes((small_year / name).read_bytes())
    cache = folder.parent / "cache"
    first = fetch(base, 2023, "collision", cache, progress=False)
    second = fetch(base, 2023, "collision", cache, progress=False)
    assert [status for file, status in handler.statuses if file == name] == [200, 304]
    assert second.path == first.path and second.sha256 == sha256_file(site / name)


def test_sha256_file_matches_the_published_digest_of_abc(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_mirror_tables_have_the_reconstructed_row_counts(mirror):
    for year, rows in MIRROR_ROWS.items():
        data = load_year(mirror.as_uri(), year, Path("/nonexistent-cache"), progress=False)
        assert (len(data.collisions), len(data.vehicles), len(data.casualties)) == rows
        assert data.collisions["collision_index"].str.startswith(str(year)).all()
        problems = set(findings_frame(data.findings)["check"])
        assert not {check for check in problems if "differs" in check or "not in the vehicle" in check}


# --- reading the column eras ----------------------------------------------------------------------------------------


def test_legacy_camelcase_collision_headers_normalise(shared_data):
    with open(shared_data / "cyipt__stats19" / "converted" / "ac_sample1000.csv", newline="") as handle:
        header = next(csv.reader(handle))
    names = dict(zip(header, canonical_columns(header), strict=True))
    assert set(names.values()) <= set(SCHEMA["collision"])
    assert names["Accident_Index"] == "collision_index"
    assert names["Accident_Severity"] == "collision_severity"
    assert names["Local_Authority_(District)"] == "local_authority_district"
    assert names["Local_Authority_(Highway)"] == "local_authority_highway"  # the curated table's local authority
    assert names["1st_Road_Class"] == "first_road_class"
    assert names["2nd_Road_Number"] == "second_road_number"
    assert names["Junction_Detail"] == "junction_detail_historic"
    assert names["Pedestrian_Crossing-Physical_Facilities"] == "pedestrian_crossing_physical_facilities_historic"
    assert names["Carriageway_Hazards"] == "carriageway_hazards_historic"
    assert names["Speed_limit"] == "speed_limit"


@pytest.mark.parametrize(
    "table, file", [("vehicle", "vehicles_sample_raw.csv"), ("casualty", "casualties_sample_raw.csv")]
)
def test_legacy_camelcase_files_read_with_year_and_reference_from_the_index(shared_data, table, file):
    path = shared_data / "ropensci__stats19" / "converted" / file
    frame = read_table(path, table)
    with open(path, newline="") as handle:
        raw = list(csv.DictReader(handle))
    assert list(frame["collision_index"]) == [row["Accident_Index"] for row in raw]
    assert list(frame["collision_year"]) == [int(row["Accident_Index"][:4]) for row in raw]
    assert list(frame["collision_ref_no"]) == [row["Accident_Index"][4:] for row in raw]  # leading zeros kept
    assert list(frame["vehicle_reference"]) == [int(row["Vehicle_Reference"]) for row in raw]
    if table == "vehicle":
        assert list(frame["vehicle_manoeuvre_historic"]) == [int(row["Vehicle_Manoeuvre"]) for row in raw]
        assert list(frame["vehicle_left_hand_drive"]) == [int(row["Was_Vehicle_Left_Hand_Drive?"]) for row in raw]
        assert list(frame["engine_capacity_cc"]) == [int(row["Engine_Capacity_(CC)"]) for row in raw]
        assert (frame["vehicle_manoeuvre"] == -1).all()  # no 2024 coding in a legacy file
    else:
        assert list(frame["casualty_severity"]) == [int(row["Casualty_Severity"]) for row in raw]


def test_bom_crlf_files_keep_text_indexes(shared_data):
    path = shared_data / "lerummi__accident-severity-forecast" / "test_accident.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    frame = read_table(path, "collision")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        raw = list(csv.DictReader(handle))
    assert list(frame["collision_index"]) == [row["accident_index"] for row in raw]
    assert list(frame["collision_ref_no"]) == [row["accident_reference"] for row in raw]
    assert frame["collision_ref_no"].iloc[0].startswith("0")
    assert list(frame["junction_detail_historic"]) == [int(row["junction_detail"]) for row in raw]
    assert list(frame["time"]) == [row["time"] for row in raw]
    assert list(frame["date"].dt.strftime("%d/%m/%Y")) == [row["date"] for row in raw]
    np.testing.assert_allclose(frame["latitude"], [float(row["latitude"]) for row in raw])


def test_2024_specification_columns_keep_both_codings(shared_data):
    """The 2023 file republished in the 2024 specification, with accident_* identity names."""
    path = shared_data / "wpatke__crossroads-uk" / _name("collision")
    frame = read_table(path, "collision")
    with open(path, newline="") as handle:
        raw = list(csv.DictReader(handle))
    assert list(frame["collision_index"]) == [row["accident_index"] for row in raw]
    for column in ("junction_detail_historic", "junction_detail", "pedestrian_crossing", "carriageway_hazards"):
        assert list(frame[column]) == [int(row[column]) for row in raw]
    assert frame.attrs["absent_columns"] == []


# --- multi-year files stream ----------------------------------------------------------------------------------------


STREAM_PROBE = """
import json, sys
import pyarrow as pa
from lib.data.stats19 import read_table
year = None if sys.argv[2] == "all" else int(sys.argv[2])
frame = read_table(sys.argv[1], "vehicle", year, block_size=64 << 10)
print(json.dumps({"max_memory": pa.default_memory_pool().max_memory(), "index": list(frame["collision_index"])}))
"""


def _probe(path: Path, year: str) -> dict:
    """Read in a fresh process, so that pyarrow's peak allocation is this read's alone."""
    command = [sys.executable, "-c", STREAM_PROBE, str(path), year]
    return json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def test_a_multi_year_file_streams_one_year_in_bounded_memory(tmp_path):
    tables = generate(range(2016, 2026), 5000, seed=5)
    write_files(tables, tmp_path, combined=True)
    path = tmp_path / combined_file_name("vehicle")
    one_year, whole = _probe(path, "2019"), _probe(path, "all")
    expected = tables.vehicles[tables.vehicles["collision_year"] == 2019]
    assert one_year["index"] == list(expected["collision_index"])
    assert len(whole["index"]) == len(tables.vehicles)
    # Parsed columns take several times the CSV bytes: a whole read peaks above the file size, a stream
    # of small batches keeping one year in ten stays well below it.
    assert one_year["max_memory"] < path.stat().st_size < whole["max_memory"]
    assert one_year["max_memory"] < whole["max_memory"] / 4


def test_a_multi_year_file_is_used_when_no_single_year_file_exists(tmp_path):
    tables = generate([2018, 2019, 2020], 300, seed=8)
    write_files(tables, tmp_path, combined=True)
    data = load_year(tmp_path.as_uri(), 2019, tmp_path / "cache", progress=False)
    assert all(source.combined for source in data.sources.values())
    expected = tables.collisions[tables.collisions["collision_year"] == 2019]
    assert list(data.collisions["collision_index"]) == list(expected["collision_index"])
    assert len(data.casualties) == (tables.casualties["collision_year"] == 2019).sum()


# --- bad input ------------------------------------------------------------------------------------------------------


def test_a_cut_off_file_is_fatal(tmp_path, small_year):
    paths = _copy_year(small_year, tmp_path)
    data = paths["vehicle"].read_bytes()
    paths["vehicle"].write_bytes(data[: len(data) - 25])
    with pytest.raises(ValidationError, match=rf"{_name('vehicle')}, line \d+:.*cut off"):
        _read_year(paths)


def test_a_ragged_row_is_fatal_with_its_line(tmp_path, small_year):
    paths = _copy_year(small_year, tmp_path)
    _rewrite(paths["collision"], lambda rows: rows[4].pop())
    with pytest.raises(ValidationError, match=rf"{_name('collision')}, line 5:.*fields where the header has 44"):
        _read_year(paths)


def test_a_missing_required_column_is_fatal(tmp_path, small_year):
    paths = _copy_year(small_year, tmp_path)

    def drop_severity(rows):
        position = rows[0].index("collision_severity")
        for row in rows:
            del row[position]

    _rewrite(paths["collision"], drop_severity)
    with pytest.raises(ValidationError, match=r"line 1, column collision_severity: required column is missing"):
        _read_year(paths)


@pytest.mark.parametrize(
    ("table", "row", "column", "value", "message"),
    [
        ("collision", 3, "speed_limit", "thirty", r"line 4, column speed_limit: value 'thirty' is not a number"),
        ("collision", 7, "date", "31/02/2023", r"line 8, column date: value '31/02/2023' is not a date"),
        ("collision", 2, "collision_severity", "4", r"line 3, column collision_severity: value 4 is not a code"),
        (
            "vehicle",
            5,
            "collision_index",
            "2023SY9999999",
            rf"{_name('vehicle')}, line 6, column collision_index: value '2023SY9999999' has no collision",
        ),
    ],
    ids=["a non-numeric code", "an impossible date", "an unknown target code", "a vehicle without collision"],
)
def test_a_bad_value_is_fatal_with_file_line_column_and_value(tmp_path, small_year, table, row, column, value, message):
    paths = _copy_year(small_year, tmp_path)

    def corrupt(rows):
        rows[row][rows[0].index(column)] = value

    _rewrite(paths[table], corrupt)
    with pytest.raises(ValidationError, match=message):
        _read_year(paths)


def test_a_duplicate_collision_is_fatal(tmp_path, small_year):
    paths = _copy_year(small_year, tmp_path)
    _rewrite(paths["collision"], lambda rows: rows.append(list(rows[1])))
    with pytest.raises(ValidationError, match=r"line 202, column collision_index: .* appears twice"):
        _read_year(paths)


def test_unknown_feature_codes_and_count_mismatches_are_reported_not_fatal(tmp_path, small_year):
    paths = _copy_year(small_year, tmp_path)
    header = {}

    def corrupt(rows):
        header.update({name: position for position, name in enumerate(rows[0])})
        rows[1][header["weather_conditions"]] = "42"
        rows[2][header["number_of_vehicles"]] = str(int(rows[2][header["number_of_vehicles"]]) + 1)
        rows[3][header["time"]] = "25:61"
        rows[4][header["speed_limit"]] = "30.0"  # float-formatted whole numbers are fine

    _rewrite(paths["collision"], corrupt)
    tables, findings = _read_year(paths)
    found = findings_frame(findings)
    counts = {(check, column): count for check, column, count in found[["check", "column", "count"]].itertuples(False)}
    assert counts[("unknown code", "weather_conditions")] == 1
    assert tables["collision"]["weather_conditions"].iloc[0] == -1
    assert counts[("number_of_vehicles differs from the vehicle rows", "number_of_vehicles")] == 1
    assert counts[("time is not HH:MM", "time")] == 1
    assert pd.isna(tables["collision"]["time"].iloc[2])
    assert tables["collision"]["speed_limit"].iloc[3] == 30
