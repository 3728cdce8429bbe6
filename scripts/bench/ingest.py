"""Benchmark: raw STATS19 CSV -> committed curated partition, against a bare pyarrow read of the same files.

Generates a synthetic national-size year (130,000 collisions by default) in the 2024 specification,
then times whole processes, side by side: each run is a fresh Python process, from its start to its
exit (interpreter, imports and work), and the two kinds alternate so that both see the same load:
* bare:      `import pyarrow.csv` and `pyarrow.csv.read_csv` of the three files (type inference, nothing else);
* committed: `lib.data.ingest.ingest_year` into a file:// lake: checksums, reading, validation, curation,
             the raw copies and the committed curated partition;
* combined:  the same for one year out of a 1979-latest style file holding 10 synthetic years
             (`--no-combined` skips it), streamed and filtered to that year.
Medians of `--repeat` runs are reported (wall, CPU = user + system of the process, peak RSS), with
the load average before and after. `--breakdown` adds where the committed run's time goes: the
process start and imports, then each stage of `ingest_year` (from cProfile, one more run), and when
pyarrow imported pandas (it does so itself, the first time it converts a Python or numpy value).

Usage: python scripts/bench/ingest.py [--collisions N] [--repeat 5] [--breakdown] [--no-combined]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

YEAR = 2023
COMBINED_YEARS = 10
TABLES = ("collision", "vehicle", "casualty")
# ingest_year's stages, by the function that does each (all in lib/data)
STAGES = {
    "checksums (download.sha256_file)": "sha256_file",
    "reading the CSVs (stats19.read_raw)": "read_raw",
    "validation (validate.validate_tables)": "validate_tables",
    "curation (curated.curated_table)": "curated_table",
    "raw copies (ingest.store_raw)": "store_raw",
    "parquet and manifest (lake.write_partition)": "write_partition",
}


def measure(kind: str, folder: Path, collisions: int) -> dict:
    """Runs inside a child process."""
    if kind.startswith("generate"):
        from lib.data.synth import generate, write_files

        if kind == "generate":
            write_files(generate([YEAR], collisions, seed=0), folder)
        else:
            years = list(range(YEAR - COMBINED_YEARS + 1, YEAR + 1))
            write_files(generate(years, collisions, seed=0), folder / "combined", combined=True)
        return {"kind": kind}

    if kind == "bare":
        import pyarrow.csv as pacsv

        paths = [folder / f"dft-road-casualty-statistics-{table}-{YEAR}.csv" for table in TABLES]
        return {"kind": kind, "rows": sum(pacsv.read_csv(path).num_rows for path in paths)}

    from lib.config import load_settings
    from lib.data.ingest import ingest_year
    from lib.data.lake import open_lake

    imported_cpu, imported_at = time.process_time(), time.perf_counter()
    source = folder / "combined" if kind == "combined" else folder
    lake = open_lake(load_settings(), f"file://{folder}/lake-{kind}-{time.time_ns()}")

    def ingest():
        return ingest_year(lake, source.as_uri(), YEAR, folder / "cache", progress=False).rows

    if kind != "breakdown":
        rows = ingest()
        return {"kind": kind, "rows": rows, "import_cpu": imported_cpu,
                "work_seconds": time.perf_counter() - imported_at}
    import cProfile
    import pstats

    pandas_began = time.perf_counter()
    import pandas  # noqa: F401 (pyarrow imports it on its first conversion of a Python or numpy value)

    pandas_seconds = time.perf_counter() - pandas_began
    profile = cProfile.Profile()
    rows = profile.runcall(ingest)
    seconds = {label: 0.0 for label in STAGES}
    for (file, _, function), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        for label, name in STAGES.items():
            if function == name and f"lib{os.sep}data" in file:
                seconds[label] += cumulative
    return {"kind": kind, "rows": rows, "import_cpu": imported_cpu, "stages": seconds, "pandas": pandas_seconds,
            "work_seconds": time.perf_counter() - imported_at}


def run_child(kind: str, folder: Path, collisions: int) -> dict:
    """One fresh process: its wall time from spawn to exit, its own CPU time and peak RSS (wait4)."""
    command = [sys.executable, __file__, "--child", kind, "--dir", str(folder), "--collisions", str(collisions)]
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"the {kind} child failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions", type=int, default=130_000, help="collisions in the synthetic year")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kind, alternating; medians reported")
    parser.add_argument("--combined", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure one year out of a 10-year 1979-latest style file")
    parser.add_argument("--breakdown", action="store_true", help="also profile one committed run, stage by stage")
    parser.add_argument("--child", choices=["generate", "generate-combined", "bare", "committed", "breakdown",
                                            "combined"], help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.dir, args.collisions)))
        return

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        run_child("generate", folder, args.collisions)
        sizes = sum(path.stat().st_size for path in folder.glob("*.csv"))
        load_before = os.getloadavg()[0]
        runs = {"bare": [], "committed": []}
        for _ in range(args.repeat):
            for kind, results in runs.items():
                results.append(run_child(kind, folder, args.collisions))
        load_after = os.getloadavg()[0]
        breakdown = run_child("breakdown", folder, args.collisions) if args.breakdown else None
        if args.combined:
            run_child("generate-combined", folder, args.collisions)
            combined_size = sum(path.stat().st_size for path in (folder / "combined").glob("*.csv"))
            combined = run_child("combined", folder, args.collisions)

    print(f"synthetic year: {args.collisions:,} collisions, {sizes / 1e6:.1f} MB of CSV; {args.repeat} runs of each, "
          f"alternating, load average {load_before:.1f} before and {load_after:.1f} after")
    medians = {kind: {key: median_of(results, key) for key in ("seconds", "cpu_seconds", "peak_rss_mb")}
               for kind, results in runs.items()}  # fmt: skip
    for label, kind in (("bare pyarrow read_csv", "bare"), ("raw CSV -> committed", "committed")):
        median = medians[kind]
        print(f"{label:22} median {median['seconds']:.2f} s wall, {median['cpu_seconds']:.2f} s CPU, "
              f"peak RSS {median['peak_rss_mb']:.0f} MB (whole process)")
    bare, committed = medians["bare"], medians["committed"]
    print(f"ratio of medians: {committed['seconds'] / bare['seconds']:.1f}x wall, "
          f"{committed['cpu_seconds'] / bare['cpu_seconds']:.1f}x CPU (target: at most 3x wall, 2x CPU)")
    print(f"committed, in process: imports done after {median_of(runs['committed'], 'import_cpu'):.2f} s CPU, "
          f"then ingest_year {median_of(runs['committed'], 'work_seconds'):.2f} s wall")
    if breakdown:
        print(f"breakdown of one more committed run ({breakdown['seconds']:.2f} s wall, under cProfile):")
        print(f"  {'interpreter start and imports (CPU)':45} {breakdown['import_cpu']:.2f} s")
        print(f"  {'pandas, which pyarrow imports itself':45} {breakdown['pandas']:.2f} s")
        for label, seconds in breakdown["stages"].items():
            print(f"  {label:45} {seconds:.2f} s")
    if args.combined:
        print(f"one year out of a {COMBINED_YEARS}-year combined file ({combined_size / 1e6:.0f} MB of CSV): "
              f"{combined['rows']:,} collisions, {combined['seconds']:.1f} s wall, "
              f"peak RSS {combined['peak_rss_mb']:.0f} MB (target: under 1.5 GB)")


if __name__ == "__main__":
    main()
