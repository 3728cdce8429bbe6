"""Ingestion into the lake: the real mirror's counts, idempotence, and failures that write nothing."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
from pandas import testing as pd_testing

from lib.config import load_settings
from lib.data.curated import CURATED, build_curated
from lib.data.download import YearNotPublished
from lib.data.ingest import ingest_year
from lib.data.lake import LakeError, open_lake
from lib.data.stats19 import load_year
from lib.data.validate import ValidationError
from lib.runner.executor import execute

# lib/data/README.md, "The mirror": collisions and severity 1/2/3 per year.
MIRROR_COUNTS = {2014: (751, 1, 54, 696), 2015: (642, 1, 45, 596), 2016: (669, 4, 55, 610),
                 2017: (680, 4, 81, 595), 2018: (707, 7, 89, 611)}


@pytest.fixture
def s3_lake(settings, tmp_path):
    lake = open_lake(settings, f"{settings.lake_uri}/ingest-{tmp_path.name}")
    yield lake
    lake.delete_prefix("")


@pytest.fixture
def http_mirror(mirror):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{mirror.name}/"
    server.shutdown()


def assert_mirror_counts(lake):
    partitions = {p.year: p for p in lake.partitions(CURATED)}
    assert sorted(partitions) == sorted(MIRROR_COUNTS)
    for year, (rows, fatal, serious, slight) in MIRROR_COUNTS.items():
        curated = lake.read_partition(CURATED, year)
        assert len(curated) == rows == partitions[year].rows
        counts = curated["collision_severity"].value_counts()
        assert (counts.get(1, 0), counts.get(2, 0), counts.get(3, 0)) == (fatal, serious, slight), year
        assert curated["collision_index"].is_unique


INGEST_ALONE = """
import json, sys
from pathlib import Path
from lib.config import load_settings
from lib.data.ingest import ingest_year
from lib.data.lake import open_lake
lake = open_lake(load_settings(), sys.argv[2])
ingest_year(lake, sys.argv[1], 2017, Path(sys.argv[3]), progress=False)
print(json.dumps(sorted(m for m in ("requests", "minio", "tqdm") if m in sys.modules)))
"""


def test_a_file_year_needs_no_http_or_s3_client_and_reads_back_as_build_curated_makes_it(mirror, tmp_path):
    # issue #17: importing the clients took 0.25 s of a national year's ingest
    lake_uri = f"file://{tmp_path}/lake"
    command = [sys.executable, "-c", INGEST_ALONE, mirror.as_uri(), lake_uri, str(tmp_path / "cache")]
    loaded = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
    assert json.loads(loaded.strip().splitlines()[-1]) == []
    committed = open_lake(load_settings(), lake_uri).read_partition(CURATED, 2017)
    year = load_year(mirror.as_uri(), 2017, tmp_path / "cache", progress=False)
    pd_testing.assert_frame_equal(committed, build_curated(year.collisions, year.vehicles, year.casualties))


def test_mirror_over_file_urls_into_the_s3_lake(mirror, s3_lake, tmp_path):
    for year in MIRROR_COUNTS:
        ingest_year(s3_lake, mirror.as_uri(), year, tmp_path / "downloads", progress=False)
    assert_mirror_counts(s3_lake)
    assert len(s3_lake.list("raw/stats19/")) == 2 * 3 * len(MIRROR_COUNTS)  # file + checksum per table


def test_mirror_over_http_into_a_file_lake_and_a_rerun_rewrites_nothing(http_mirror, settings, tmp_path):
    lake = open_lake(settings, f"file://{tmp_path}/lake")
    first = [ingest_year(lake, http_mirror, y, tmp_path / "dl", progress=False) for y in MIRROR_COUNTS]
    assert {r.status for r in first} == {"ingested"}
    assert_mirror_counts(lake)
    before = {key: (tmp_path / "lake" / key).stat().st_mtime_ns for key in lake.list("")}

    again = [ingest_year(lake, http_mirror, y, tmp_path / "dl", progress=False) for y in MIRROR_COUNTS]
    assert {r.status for r in again} == {"unchanged"}
    assert {key: (tmp_path / "lake" / key).stat().st_mtime_ns for key in lake.list("")} == before

    forced = ingest_year(lake, http_mirror, 2018, tmp_path / "dl", force=True, progress=False)
    assert forced.status == "ingested" and forced.raw_written == []  # same bytes: raw not rewritten
    assert_mirror_counts(lake)


def _broken_copy(mirror, tmp_path, year, edit):
    copy = tmp_path / "broken" / mirror.name
    shutil.copytree(mirror, copy)
    edit(copy / f"dft-road-casualty-statistics-accident-{year}.csv")
    return copy.as_uri()


@pytest.mark.parametrize("breakage", ["truncated", "missing column", "unknown severity"])
def test_bad_input_names_the_problem_and_leaves_the_partition_untouched(mirror, tmp_path, settings, breakage):
    lake = open_lake(settings, f"file://{tmp_path}/lake")
    ingest_year(lake, mirror.as_uri(), 2017, tmp_path / "dl", progress=False)
    committed = lake.manifest(CURATED, 2017)

    def edit(path):
        text = path.read_text()
        if breakage == "truncated":
            path.write_text(text[: len(text) // 2])
        elif breakage == "missing column":
            path.write_text(text.replace("speed_limit,", "", 1))
        else:
            lines = text.splitlines()
            fields = lines[1].split(",")
            fields[8] = "7"  # accident_severity
            path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")

    with pytest.raises(ValidationError) as error:
        ingest_year(lake, _broken_copy(mirror, tmp_path, 2017, edit), 2017, tmp_path / "dl2", force=True,
                    progress=False)
    assert "accident-2017.csv" in str(error.value)
    assert lake.manifest(CURATED, 2017) == committed
    assert len(lake.read_partition(CURATED, 2017)) == 680


def test_a_year_that_is_not_published_and_wrong_credentials_fail_clearly(mirror, settings, tmp_path):
    lake = open_lake(settings, f"file://{tmp_path}/lake")
    with pytest.raises(YearNotPublished, match="2031 is not published"):
        ingest_year(lake, mirror.as_uri(), 2031, tmp_path / "dl", progress=False)
    assert lake.list("") == []

    wrong = load_settings({**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    with pytest.raises(LakeError, match="refused the credentials"):
        open_lake(wrong)


def test_the_ingest_notebook_runs_headless_and_is_idempotent(mirror, settings, tmp_path):
    lake_uri = f"file://{tmp_path}/lake"
    params = {"years": "2016-2018", "base_url": mirror.as_uri()}
    own = replace(settings, lake_uri=lake_uri, reports_dir=tmp_path / "reports")
    first = execute("01_ingest", params, settings=own, progress=False)
    assert first.ok, first.describe()
    assert first.output_html.exists()
    lake = open_lake(settings, lake_uri)
    manifests = {p.year: p.manifest for p in lake.partitions(CURATED)}
    assert sorted(manifests) == [2016, 2017, 2018]

    second = execute("01_ingest", params, settings=own, progress=False)
    assert second.ok, second.describe()
    assert {p.year: p.manifest for p in lake.partitions(CURATED)} == manifests
