"""Benchmark: how good the model families and baselines are, on the real mirror and on synthetic data.

Fits `lib.modeling.candidates.fit_candidates` in process (no services) and prints, as markdown tables, each family's
validation KSI ROC-AUC, PR-AUC and Brier score (the selection), then every candidate's test KSI ROC-AUC
and PR-AUC with 95% bootstrap intervals (1,000 resamples, seed 42, as 02_train), Brier score and alert
precision, and the registered model's paired differences. The same figures appear in 02_train's report.

* mirror: the Waltham Forest mirror in ../shared (train 2014-2016, validate 2017, test 2018);
* synthetic: three national-size years drawn like scripts/bench/train.py does (train 2021, validate
  2022, test 2023).

Usage: python scripts/bench/model.py [mirror|synthetic]...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from lib.config import ROOT
from lib.data import stats19
from lib.data.curated import build_curated
from lib.data.synth import generate
from lib.modeling.candidates import MODEL, evaluate, fit_candidates
from lib.modeling.split import Split, split_by_years

MIRROR = ROOT.parent / "shared" / "data" / "stats19" / "mirror" / "road-accidents-safety-data"
SYNTHETIC_YEARS = (2021, 2022, 2023)
SYNTHETIC_COLLISIONS_PER_YEAR = 130_000


def mirror() -> tuple[pd.DataFrame, Split]:
    with tempfile.TemporaryDirectory() as cache:
        years = []
        for year in range(2014, 2019):
            data = stats19.load_year(MIRROR.as_uri() + "/", year, Path(cache), progress=False)
            years.append(build_curated(data.collisions, data.vehicles, data.casualties))
    return pd.concat(years, ignore_index=True), split_by_years([2014, 2015, 2016], 2017, 2018)


def synthetic() -> tuple[pd.DataFrame, Split]:
    years = []
    for year in SYNTHETIC_YEARS:
        tables = generate([year], SYNTHETIC_COLLISIONS_PER_YEAR, seed=year)
        years.append(build_curated(tables.collisions, tables.vehicles, tables.casualties))
    split = split_by_years([SYNTHETIC_YEARS[0]], SYNTHETIC_YEARS[1], SYNTHETIC_YEARS[2])
    return pd.concat(years, ignore_index=True), split


def report(name: str, curated: pd.DataFrame, split: Split) -> None:
    parts = split.apply(curated)
    candidates = fit_candidates(parts["train"], parts["validation"], seed=42)
    evaluation = evaluate(candidates, parts["test"], resamples=1000, seed=42)
    print(f"\n## {name}: {split.rule}; selected `{candidates.selected}`\n")
    print("| family | validation KSI ROC-AUC | PR-AUC | Brier |\n|---|---|---|---|")
    for family, row in candidates.validation.iterrows():
        print(f"| {family} | {row['ksi_roc_auc']:.3f} | {row['ksi_pr_auc']:.3f} | {row['ksi_brier']:.3f} |")
    boot = evaluation.bootstrap.set_index(["comparison", "metric"])
    print("\n| candidate | test KSI ROC-AUC (95% CI) | PR-AUC (95% CI) | Brier | alert precision |")
    print("|---|---|---|---|---|")
    for candidate, metrics in evaluation.metrics.iterrows():
        roc, pr = boot.loc[(candidate, "ksi_roc_auc")], boot.loc[(candidate, "ksi_pr_auc")]
        print(
            f"| {candidate} | {roc.estimate:.3f} ({roc.low:.3f}-{roc.high:.3f}) | {pr.estimate:.3f} "
            f"({pr.low:.3f}-{pr.high:.3f}) | {metrics['ksi_brier']:.3f} | {metrics['ksi_precision']:.3f} |"
        )
    print("\n| model minus | KSI ROC-AUC (95% CI) | KSI PR-AUC (95% CI) |\n|---|---|---|")
    for other in evaluation.metrics.index.drop(MODEL):
        roc = boot.loc[(f"{MODEL} - {other}", "ksi_roc_auc")]
        pr = boot.loc[(f"{MODEL} - {other}", "ksi_pr_auc")]
        print(
            f"| {other} | {roc.estimate:+.3f} ({roc.low:+.3f} to {roc.high:+.3f}) "
            f"| {pr.estimate:+.3f} ({pr.low:+.3f} to {pr.high:+.3f}) |"
        )


def main() -> None:
    sources = {"mirror": mirror, "synthetic": synthetic}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help=f"data sets to measure: {', '.join(sources)} (default: both)")
    names = parser.parse_args().data or list(sources)
    if unknown := [name for name in names if name not in sources]:
        parser.error(f"unknown data set {unknown[0]!r}; choose from {', '.join(sources)}")
    for name in names:
        if name == "mirror" and not MIRROR.is_dir():
            raise SystemExit(f"the shared mirror is not at {MIRROR}")
        report(name, *sources[name]())


if __name__ == "__main__":
    main()
