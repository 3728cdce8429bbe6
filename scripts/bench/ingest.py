"""Benchmark: raw STATS19 CSV -> curated table, against a bare pyarrow read of the same files.

Generates a synthetic national-size year (130,000 collisions by default) in the 2024 specification,
then runs each measurement in a fresh Python process, so that its peak RSS is its own:
* bare:      pyarrow.csv.read_csv of the three files (type inference, nothing else);
* committed: lib.data.ingest.ingest_year into a file:// lake: checksums, reading, validation, curation,
             the raw copies and the committed curated partition;
* combined:  the same for one year out of a 1979-latest style file holding 10 synthetic years
             (`--combined-years 0` skips it), streamed and filtered to that year.
The best of `--repeat` runs is reported, wall and CPU time (CPU time is the steadier figure on a busy
machine; the target is about wall time on an idle one).

Usage: python scripts/bench/ingest.py [--collisions N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

YEAR = 2023
COMBINED_YEARS = 10
TABLES = ("collision", "vehicle", "casualty")


def measure(kind: str, folder: Path, collisions: int) -> dict:
    """Runs inside a child process."""
    from lib.data.synth import generate, write_files

    if kind == "generate":
        write_files(generate([YEAR], collisions, seed=0), folder)
        return {"kind": kind}
    if kind == "generate-combined":
        years = list(range(YEAR - COMBINED_YEARS + 1, YEAR + 1))
        write_files(generate(years, collisions, seed=0), folder / "combined", combined=True)
        return {"kind": kind}

    import pyarrow.csv as pacsv

    from lib.config import load_settings
    from lib.data.download import FILE_PREFIX
    from lib.data.ingest import ingest_year
    from lib.data.lake import open_lake

    paths = {table: folder / f"{FILE_PREFIX}{table}-{YEAR}.csv" for table in TABLES}
    started, cpu_started = time.perf_counter(), time.process_time()
    if kind == "bare":
        rows = sum(pacsv.read_csv(path).num_rows for path in paths.values())
    else:
        source = folder / "combined" if kind == "combined" else folder
        lake = open_lake(load_settings(), f"file://{folder}/lake-{kind}-{time.time_ns()}")
        rows = ingest_year(lake, source.as_uri(), YEAR, folder / "cache", progress=False).rows
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_mb, "rows": rows}


def run_child(kind: str, folder: Path, collisions: int) -> dict:
    # Linux keeps ru_maxrss across exec, so the parent stays small: even generating runs in a child.
    command = [sys.executable, __file__, "--child", kind, "--dir", str(folder), "--collisions", str(collisions)]
    output = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions", type=int, default=130_000, help="collisions in the synthetic year")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    parser.add_argument("--combined", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure one year out of a 10-year 1979-latest style file")
    parser.add_argument("--child", choices=["generate", "generate-combined", "bare", "committed", "combined"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.dir, args.collisions)))
        return

    with tempfile.TemporaryDirectory() as folder:
        run_child("generate", Path(folder), args.collisions)
        sizes = sum(path.stat().st_size for path in Path(folder).glob("*.csv"))
        results = {
            kind: min(
                (run_child(kind, Path(folder), args.collisions) for _ in range(args.repeat)),
                key=lambda result: result["seconds"],
            )
            for kind in ("bare", "committed")
        }
        if args.combined:
            run_child("generate-combined", Path(folder), args.collisions)
            combined_size = sum(path.stat().st_size for path in (Path(folder) / "combined").glob("*.csv"))
            results["combined"] = run_child("combined", Path(folder), args.collisions)
    bare, committed = results["bare"], results["committed"]
    print(f"synthetic year: {args.collisions:,} collisions, {sizes / 1e6:.1f} MB of CSV")
    for label, result in (("bare pyarrow read_csv", bare), ("raw CSV -> committed", committed)):
        print(f"{label:22} {result['seconds']:.2f} s wall, {result['cpu_seconds']:.2f} s CPU, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
    wall, cpu = committed["seconds"] / bare["seconds"], committed["cpu_seconds"] / bare["cpu_seconds"]
    print(f"ratio: {wall:.1f}x wall, {cpu:.1f}x CPU (target: at most 4x wall, under 1.5 GB)")
    if "combined" in results:
        combined = results["combined"]
        print(f"one year out of a {COMBINED_YEARS}-year combined file ({combined_size / 1e6:.0f} MB of CSV): "
              f"{combined['rows']:,} collisions, {combined['seconds']:.1f} s wall, "
              f"peak RSS {combined['peak_rss_mb']:.0f} MB (target: under 1.5 GB)")


if __name__ == "__main__":
    main()
