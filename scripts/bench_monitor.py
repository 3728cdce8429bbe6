"""Time the monitoring steps on synthetic national-size windows (no services needed).

    .venv/bin/python scripts/bench_monitor.py [--collisions-per-year 130000] [--reference-rows 5000]

Two synthetic years are curated as ingestion does; a stand-in model (scaled logistic regression,
trained on the first year) scores a 5,000-row reference and windows of 2,500 and 5,000 rows from the
second year, one of them in a week flooded with rural 60 mph collisions at night. Prints the import
time of Evidently and, per window, the seconds of drift (Evidently report), the HTML report and quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import monitor, stats19, synth  # noqa: E402
from lib.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, NUMERIC_FEATURES, build_curated  # noqa: E402

SHIFT = synth.Shift(date(2024, 3, 4), date(2024, 3, 10))
WINDOWS = {"unshifted week": date(2024, 2, 26), "shifted week": SHIFT.start}


def curated_years(collisions_per_year: int, folder: Path) -> pd.DataFrame:
    synth.write_files(synth.generate([2023, 2024], collisions_per_year, seed=1, shift=SHIFT), folder)
    years = [stats19.load_year(folder.as_uri() + "/", year, folder / "cache", progress=False) for year in (2023, 2024)]
    return pd.concat([build_curated(y.collisions, y.vehicles, y.casualties) for y in years], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collisions-per-year", type=int, default=130_000)
    parser.add_argument("--reference-rows", type=int, default=5_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        curated = curated_years(args.collisions_per_year, Path(tmp))
        training = curated[curated["collision_year"] == 2023]
        features = training[FEATURE_COLUMNS].astype("float64").fillna(-1)
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, training["ksi"])

        def scored(frame: pd.DataFrame) -> pd.DataFrame:
            p_ksi = model.predict_proba(frame[FEATURE_COLUMNS].astype("float64").fillna(-1))[:, 1]
            alert = p_ksi >= 0.3
            return frame.assign(
                p_ksi=p_ksi, ksi_alert=alert, predicted_severity=np.where(alert, 2, 3), collision_date=frame["date"]
            )

        reference = scored(training.sample(args.reference_rows, random_state=0))
        started = time.perf_counter()
        import evidently  # noqa: F401  (timed here so that the drift timings below exclude it)

        print(f"import evidently: {time.perf_counter() - started:.2f} s")
        for label, start in WINDOWS.items():
            end = start + timedelta(days=6)
            dates = curated["date"]
            week = scored(curated[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))])
            for rows in (2_500, 5_000):
                window = week.sample(rows, replace=len(week) < rows, random_state=0)
                t0 = time.perf_counter()
                drift, snapshot = monitor.compute_drift(window, reference, CATEGORICAL_FEATURES, NUMERIC_FEATURES)
                t1 = time.perf_counter()
                monitor.save_report(snapshot, Path(tmp) / "reports", start, end, "bench")
                t2 = time.perf_counter()
                monitor.compute_quality(window, start, end, end + timedelta(days=30), 30)
                t3 = time.perf_counter()
                print(
                    f"{label}, {rows:,} rows vs {len(reference):,} reference ({drift.features} features): "
                    f"drift {t1 - t0:.2f} s, HTML report {t2 - t1:.2f} s, quality {t3 - t2:.3f} s; "
                    f"{drift.share_drifted_features:.0%} of the features drifted"
                )


if __name__ == "__main__":
    main()
