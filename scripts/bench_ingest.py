"""Benchmark: raw STATS19 CSV -> curated table, against a bare pyarrow read of the same files.

Generates a synthetic national-size year (130,000 collisions by default) in the 2024 specification,
then runs each measurement in a fresh Python process, so that its peak RSS is its own:
* bare:    pyarrow.csv.read_csv of the three files (type inference, nothing else);
* curated: lib.stats19.read_table + lib.validate.validate_year + lib.features.build_curated.
The best of `--repeat` runs is reported, wall and CPU time (CPU time is the steadier figure on a busy
machine; the target is about wall time on an idle one).

Usage: python scripts/bench_ingest.py [--collisions N] [--repeat 3]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YEAR = 2023
TABLES = ("collision", "vehicle", "casualty")


def measure(kind: str, folder: Path, collisions: int) -> dict:
    """Runs inside a child process."""
    if kind == "generate":
        from lib.synth import generate, write_files

        write_files(generate([YEAR], collisions, seed=0), folder)
        return {"kind": kind}

    import pyarrow.csv as pacsv

    from lib.features import build_curated
    from lib.stats19 import FILE_PREFIX, read_table
    from lib.validate import validate_year

    paths = {table: folder / f"{FILE_PREFIX}{table}-{YEAR}.csv" for table in TABLES}
    started, cpu_started = time.perf_counter(), time.process_time()
    if kind == "bare":
        rows = sum(pacsv.read_csv(path).num_rows for path in paths.values())
    else:
        tables = {table: read_table(path, table) for table, path in paths.items()}
        validate_year(YEAR, tables["collision"], tables["vehicle"], tables["casualty"])
        rows = len(build_curated(tables["collision"], tables["vehicle"], tables["casualty"]))
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
    parser.add_argument("--child", choices=["generate", "bare", "curated"], help=argparse.SUPPRESS)
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
            for kind in ("bare", "curated")
        }
    bare, curated = results["bare"], results["curated"]
    print(f"synthetic year: {args.collisions:,} collisions, {sizes / 1e6:.1f} MB of CSV")
    for label, result in (("bare pyarrow read_csv", bare), ("raw CSV -> curated", curated)):
        print(f"{label:22} {result['seconds']:.2f} s wall, {result['cpu_seconds']:.2f} s CPU, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
    wall, cpu = curated["seconds"] / bare["seconds"], curated["cpu_seconds"] / bare["cpu_seconds"]
    print(f"ratio: {wall:.1f}x wall, {cpu:.1f}x CPU (target: at most 4x wall on an idle machine, under 1.5 GB)")


if __name__ == "__main__":
    main()
