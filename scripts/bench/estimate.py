"""Benchmark: how far a window's estimated quality (from P(KSI) alone) lands from its realised quality.

The registered model (lib.modeling.candidates.fit_families, the selected family) is fitted on the
training years and calibrated on the validation year, in process (no services), on the data of
scripts/bench/model.py. Its test year is cut into windows, and each window's estimated KSI ROC-AUC,
PR-AUC, and precision and recall at the alert threshold (lib.monitoring.estimated_quality) are compared
with the realised figures from the window's labels (lib.modeling.evaluation.test_metrics, as 04_monitor),
in three cases:

* no shift: the windows as they happened;
* covariate shift: each window redrawn from the test year with rural, dark and 60+ mph collisions
  `--covariate-weight` times as likely each (multiplied where they combine); their labels are real, so
  severity depends on the features as before;
* label shift: the windows as they happened, with `--relabelled` of the slight collisions recorded as
  KSI instead, at random, as a move to injury-based reporting would (the features do not change).
  The estimate cannot see this case: nothing in P(KSI) moves.

Per case and metric it prints the mean estimate and realised figure, the bias (estimate minus
realised), the mean absolute error, and the error label sampling alone would give a model exactly as
calibrated as it claims (labels drawn `--draws` times from each window's P(KSI)), plus how many windows'
estimated PR-AUC falls below 0.8 x the estimate on the model's reference sample (the provisional rule
of lib.monitoring.retraining, applied per window rather than to a mean of four).

Usage: python scripts/bench/estimate.py [synthetic|mirror]... [--draws 100]
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from model import MIRROR, mirror, synthetic  # scripts/bench/model.py: the same data and time split

from lib.modeling.candidates import fit_families
from lib.modeling.evaluation import ModelScores, is_ksi, test_metrics
from lib.modeling.mlflow_model import reference_sample
from lib.monitoring.estimated_quality import estimate_quality
from lib.monitoring.retraining import RetrainingPolicy

METRICS = {"ksi_roc_auc": "ROC-AUC", "ksi_pr_auc": "PR-AUC", "ksi_precision": "precision", "ksi_recall": "recall"}
WINDOW_DAYS = {"synthetic": 7, "mirror": 28}  # the mirror's weeks hold 14 collisions, two of them KSI


@dataclass(frozen=True)
class Window:
    p_ksi: np.ndarray
    ksi: np.ndarray  # the labels the window's quality is measured on


def realised(p_ksi: np.ndarray, ksi: np.ndarray, threshold: float) -> dict[str, float]:
    alert = p_ksi >= threshold
    scores = ModelScores("model", p_ksi, np.where(alert, 2, 3), alert)
    return test_metrics(np.where(ksi, 2, 3), scores)


def windows_by_date(test: pd.DataFrame, days: int) -> list[np.ndarray]:
    """Row positions of each full window of `days` days of the test year."""
    day = (test["date"] - test["date"].min()).dt.days.to_numpy()
    return [np.flatnonzero(day // days == k) for k in range(day.max() // days)]


def shift_weights(test: pd.DataFrame, weight: float) -> np.ndarray:
    """How much likelier each collision is drawn: `weight` for rural, for dark, for 60+ mph, multiplied."""
    rural = test["urban_or_rural_area"].eq(2).fillna(False).to_numpy()
    dark = test["light_conditions"].isin([4, 5, 6, 7]).fillna(False).to_numpy()
    fast = test["speed_limit"].ge(60).fillna(False).to_numpy()
    return weight ** (rural.astype(int) + dark.astype(int) + fast.astype(int))


def cases(test: pd.DataFrame, p_ksi: np.ndarray, days: int, args, rng) -> dict[str, list[Window]]:
    ksi = is_ksi(test["collision_severity"])
    positions = windows_by_date(test, days)
    weights = shift_weights(test, args.covariate_weight)
    covariate = [rng.choice(len(test), size=len(rows), replace=False, p=weights / weights.sum()) for rows in positions]
    relabelled = ksi | (rng.random(len(ksi)) < args.relabelled)
    return {
        "no shift": [Window(p_ksi[rows], ksi[rows]) for rows in positions],
        "covariate shift": [Window(p_ksi[rows], ksi[rows]) for rows in covariate],
        "label shift": [Window(p_ksi[rows], relabelled[rows]) for rows in positions],
    }


def sampling_error(window: Window, estimate: dict, threshold: float, draws: int, rng) -> dict[str, float]:
    """Mean |realised - estimate| over label sets drawn from the window's own P(KSI)."""
    errors = {name: [] for name in METRICS}
    for _ in range(draws):
        values = realised(window.p_ksi, rng.random(len(window.p_ksi)) < window.p_ksi, threshold)
        for name in METRICS:
            if estimate[name] is not None and np.isfinite(values[name]):
                errors[name].append(abs(values[name] - estimate[name]))
    return {name: float(np.mean(found)) if found else np.nan for name, found in errors.items()}


def report(name: str, curated: pd.DataFrame, split, args) -> None:
    began = time.perf_counter()
    parts = split.apply(curated)
    families = fit_families(parts["train"], parts["validation"], seed=42)
    model = families.models[families.selected]
    test = parts["test"].reset_index(drop=True)
    p_ksi = model.predict(test)["p_ksi"].to_numpy()
    threshold = model.alert_threshold
    reference = estimate_quality(reference_sample(model, parts["train"])["p_ksi"], threshold).ksi_pr_auc
    floor = RetrainingPolicy().quality_fraction * reference
    rng = np.random.default_rng(0)
    windows = cases(test, p_ksi, WINDOW_DAYS[name], args, rng)
    sizes = [len(window.p_ksi) for window in windows["no shift"]]
    print(
        f"\n## {name}: {split.rule}; model `{families.selected}`, alert threshold {threshold:.3f}; "
        f"{len(sizes)} windows of {WINDOW_DAYS[name]} days, {min(sizes):,}-{max(sizes):,} collisions "
        f"(median {int(np.median(sizes)):,}); estimated PR-AUC on the reference sample {reference:.3f}, "
        f"so the provisional floor is {floor:.3f}\n"
    )
    print(
        "| case | metric | mean estimate | mean realised | bias | MAE | MAE from label sampling alone "
        "| windows estimated below the floor |\n|---|---|---|---|---|---|---|---|"
    )
    seconds = []
    for case, found in windows.items():
        rows, below = [], 0
        for window in found:
            started = time.perf_counter()
            estimate = estimate_quality(window.p_ksi, threshold)
            seconds.append(time.perf_counter() - started)
            below += estimate.ksi_pr_auc is not None and estimate.ksi_pr_auc < floor
            estimated = {metric: getattr(estimate, metric) for metric in METRICS}
            noise = sampling_error(window, estimated, threshold, args.draws, rng)
            actual = realised(window.p_ksi, window.ksi, threshold)
            for metric in METRICS:
                defined = estimated[metric] is not None and np.isfinite(actual[metric])
                rows.append(
                    {
                        "metric": metric,
                        "estimate": estimated[metric] if defined else np.nan,
                        "realised": actual[metric] if defined else np.nan,
                        "noise": noise[metric],
                    }
                )
        table = pd.DataFrame(rows).dropna(subset=["estimate", "realised"])
        for metric, label in METRICS.items():
            part = table[table["metric"] == metric]
            error = part["estimate"] - part["realised"]
            print(
                f"| {case} | {label} | {part['estimate'].mean():.3f} | {part['realised'].mean():.3f} "
                f"| {error.mean():+.3f} | {error.abs().mean():.3f} | {part['noise'].mean():.3f} "
                f"| {f'{below} of {len(found)}' if metric == 'ksi_pr_auc' else ''} |"
            )
    print(
        f"\nOne estimate takes {np.median(seconds) * 1000:.2f} ms (median over {len(seconds)} windows); "
        f"the whole {name} benchmark took {time.perf_counter() - began:.0f} s.",
        flush=True,
    )


def main() -> None:
    sources = {"synthetic": synthetic, "mirror": mirror}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help=f"data sets to measure: {', '.join(sources)} (default: both)")
    parser.add_argument("--draws", type=int, default=100, help="label sets drawn per window for the sampling error")
    parser.add_argument("--covariate-weight", type=float, default=3.0)
    parser.add_argument("--relabelled", type=float, default=0.1, help="share of slight collisions recorded as KSI")
    args = parser.parse_args()
    names = args.data or list(sources)
    if unknown := [name for name in names if name not in sources]:
        parser.error(f"unknown data set {unknown[0]!r}; choose from {', '.join(sources)}")
    logging.basicConfig(level=logging.WARNING)
    for name in names:
        if name == "mirror" and not MIRROR.is_dir():
            raise SystemExit(f"the shared mirror is not at {MIRROR}")
        report(name, *sources[name](), args)


if __name__ == "__main__":
    main()
