"""One year from DfT's files (or a mirror) into the lake: raw bytes, then a curated partition.

A year is skipped, writing nothing, when the lake already holds a curated partition built by this
version of the curation from files with the same SHA-256 checksums (`force` rebuilds it). Raw files
are stored as downloaded under `raw/stats19/<table>/year=YYYY/<published name>`, and not written
again when the lake holds the same bytes. A file that holds every year (`...-1979-latest-published-
year.csv`) is stored once under `raw/stats19/<table>/all-years/`. Nothing is written for a year
whose files fail validation, so committed partitions stay as they were.

From the CSV to the parquet file a year stays in Arrow and numpy (`lib.data.tables`), and a file://
source and lake import neither the HTTP nor the S3 client.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lib.data import download, stats19
from lib.data.curated import CURATED, CURATION_VERSION, curated_table
from lib.data.lake import Lake, NoSuchObject
from lib.data.validate import Finding

log = logging.getLogger(__name__)


@dataclass
class YearResult:
    year: int
    status: str  # "ingested" or "unchanged"
    rows: int
    severity_counts: dict[int, int]
    findings: list[Finding] = field(default_factory=list)
    raw_written: list[str] = field(default_factory=list)
    seconds: float = 0.0


def raw_key(source: download.Source) -> str:
    folder = "all-years" if source.combined else f"year={source.year}"
    return f"raw/stats19/{source.table}/{folder}/{source.name}"


def store_raw(lake: Lake, source: download.Source) -> bool:
    """Copy the published bytes into the lake unless it holds them already; True if written."""
    key = raw_key(source)
    checksum_key = key + ".sha256"
    try:
        if lake.get_bytes(checksum_key).decode().strip() == source.sha256:
            return False
    except NoSuchObject:
        pass  # not copied yet
    lake.put_file(key, source.path)
    lake.put_bytes(checksum_key, source.sha256.encode())  # last: marks the copy complete
    return True


def severity_counts(curated: pa.Table) -> dict[int, int]:
    counts = pc.value_counts(curated["collision_severity"]).to_pylist()
    found = {int(count["values"]): count["counts"] for count in counts}
    return {code: found.get(code, 0) for code in (1, 2, 3)}


def ingest_year(lake: Lake, base_url: str, year: int, cache_dir: Path, *, force: bool = False,
                progress: bool = True) -> YearResult:
    """Bring one year into the lake; see the module docstring for when it writes nothing."""
    began = time.perf_counter()
    sources = download.fetch_year(base_url, year, cache_dir, progress=progress)
    checksums = {table: source.sha256 for table, source in sources.items()}
    committed = lake.manifest(CURATED, year)
    if (not force and committed is not None and committed.get("source_sha256") == checksums
            and committed.get("curation_version") == CURATION_VERSION):
        log.info("Year %d is already in the lake from the same files; nothing to do.", year)
        return YearResult(year, "unchanged", committed["rows"],
                          {int(k): v for k, v in committed["severity_counts"].items()},
                          seconds=time.perf_counter() - began)

    data = stats19.read_year(year, sources, base_url)
    curated = curated_table(data.raw["collision"], data.raw["vehicle"], data.raw["casualty"], data.links)
    counts = severity_counts(curated)
    written = [raw_key(s) for s in sources.values() if store_raw(lake, s)]
    lake.write_partition(
        CURATED, year, curated,
        curation_version=CURATION_VERSION,
        source_sha256=checksums,
        source_files={table: source.url for table, source in sources.items()},
        severity_counts=counts,
        findings=sum(f.count for f in data.findings),
    )
    log.info("Year %d: %s collisions curated (%s fatal, %s serious, %s slight) with %d validation findings.",
             year, f"{curated.num_rows:,}", *(f"{counts[c]:,}" for c in (1, 2, 3)), len(data.findings))
    return YearResult(year, "ingested", curated.num_rows, counts, data.findings, written,
                      time.perf_counter() - began)
