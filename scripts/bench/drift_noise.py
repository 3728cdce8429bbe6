"""Benchmark: how many collisions a window needs before its drift is more than chance.

Evidently's drift distances (Jensen-Shannon for codes, normed Wasserstein for numbers, drift at 0.1)
do not allow for the window's size, so a small window looks drifted even when nothing changed. This
draws windows of several sizes at random from a synthetic year with no shift, compares each with a
5,000-row reference from the year before (lib.monitoring.monitor.compute_drift, as 04_monitor does), and prints
the share of drifted features: the floor under which 04_monitor's `min_drift_rows` ignores drift.
No services are needed.

Usage: python scripts/bench/drift_noise.py [--sizes 14,50,100,200,300,400,800] [--samples 10]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lib.data import stats19, synth
from lib.data.curated import build_curated
from lib.data.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from lib.monitoring import monitor, retraining

YEARS = (2023, 2024)


def curated_years(collisions_per_year: int) -> dict[int, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synth.write_files(synth.generate(list(YEARS), collisions_per_year, seed=5), folder)
        years = {}
        for year in YEARS:
            raw = stats19.load_year(folder.as_uri() + "/", year, folder / "cache", progress=False)
            years[year] = build_curated(raw.collisions, raw.vehicles, raw.casualties)
        return years


def with_predictions(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Stand-in model outputs: compute_drift also tests them, but only the features' share is reported."""
    p_ksi = rng.beta(2, 8, len(frame))
    return frame.assign(p_ksi=p_ksi, predicted_severity=np.where(p_ksi > 0.3, 2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14,50,100,200,300,400,800")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--collisions-per-year", type=int, default=60_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # compute_drift warns per window about empty features
    warnings.filterwarnings("ignore")  # and Evidently about divisions in tiny windows

    rng = np.random.default_rng(0)
    years = curated_years(args.collisions_per_year)
    reference = with_predictions(years[YEARS[0]].sample(5_000, random_state=0), rng)
    current = with_predictions(years[YEARS[1]], rng)
    policy = retraining.RetrainingPolicy()
    print(
        f"{args.samples} unshifted windows per size against a 5,000-row reference; retraining threshold "
        f"{policy.drift_share_threshold:.0%} of the features, min_drift_rows {policy.min_drift_rows}"
    )
    print(f"{'collisions':>10}  {'mean share':>10}  {'max share':>9}  {'windows over the threshold':>26}")
    for size in (int(s) for s in args.sizes.split(",")):
        shares = [
            monitor.compute_drift(
                current.sample(size, random_state=seed), reference, CATEGORICAL_FEATURES, NUMERIC_FEATURES
            )[0].share_drifted_features
            for seed in range(args.samples)
        ]
        over = sum(share >= policy.drift_share_threshold for share in shares)
        print(f"{size:>10,}  {np.mean(shares):>10.1%}  {max(shares):>9.1%}  {over:>17} of {args.samples}", flush=True)


if __name__ == "__main__":
    main()
