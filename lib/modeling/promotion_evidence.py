"""Why a version was or was not promoted: the challenger against the champion on the same test rows.

Built by the promotion gate (`lib.modeling.registry.promote_if_better`) from the outputs it decided on,
for every decision, promoted or not:
* **metrics**: each metric the gate may decide on, for both versions and for challenger minus champion;
  KSI ROC-AUC, PR-AUC and Brier score with paired bootstrap percentile intervals (both versions scored on
  the same resamples, `lib.modeling.evaluation.bootstrap_auc`);
* **calibration**: each version's reliability table (P(KSI) in ten bins of equal count, mean prediction
  against observed KSI share), Brier score and expected calibration error;
* **by police force**: collisions, KSI collisions, observed and expected KSI (the sum of P(KSI)) and each
  version's KSI ROC-AUC and PR-AUC. A force with fewer than `MIN_FORCE_KSI` KSI collisions is flagged
  (`enough_ksi` false) and left unranked: its AUCs would rest on a handful of collisions. The others are
  ranked by the challenger's PR-AUC minus the champion's, largest gain first.
A first version, or one whose champion could not score the rows, gets the same evidence for itself alone.

`record_evidence` writes it to the challenger's MLflow run as `promotion/evidence.json` (every number)
and `promotion/evidence.md` (the tables to read), and a short summary at the end of the registered
version's description, replacing the summary of an earlier decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mlflow
import numpy as np
import pandas as pd

from lib.data.codes import LABELS
from lib.modeling.evaluation import (
    ModelScores,
    bootstrap_auc,
    expected_calibration_error,
    is_ksi,
    reliability_table,
    test_metrics,
)
from lib.modeling.model import severity_of

EVIDENCE_JSON = "promotion/evidence.json"
EVIDENCE_MARKDOWN = "promotion/evidence.md"
CHALLENGER, CHAMPION = "challenger", "champion"
# Forces with fewer KSI collisions in the test rows are flagged, not ranked.
MIN_FORCE_KSI = 30
FORCE_METRICS = ("ksi_roc_auc", "ksi_pr_auc")
# What the summary in the version's description quotes after the gate's primary metric.
SUMMARY_METRICS = ("ksi_pr_auc", "ksi_roc_auc", "ksi_brier")
# Starts the evidence summary in a version's description; a later decision replaces what follows it.
SUMMARY_HEADING = "### Promotion evidence"
MAX_DESCRIPTION = 5000  # characters: MLflow's model_versions.description column


def _number(value) -> float | None:
    """A JSON-safe float: None for NaN."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _intervals(severity: np.ndarray, outputs: Mapping[str, pd.DataFrame], resamples: int, seed: int) -> dict:
    """{(comparison, metric): row} of the paired bootstrap; {} when the rows lack KSI or non-KSI collisions."""
    ksi = is_ksi(severity)
    if not 0 < ksi.sum() < len(ksi):
        return {}
    table = bootstrap_auc(severity, {name: frame["p_ksi"].to_numpy(dtype=float) for name, frame in outputs.items()},
                          CHALLENGER, resamples=resamples, seed=seed, with_brier=True)
    return {(row.comparison, row.metric): row for row in table.itertuples()}


def _estimate(value: float, row=None) -> dict:
    estimate = {"estimate": _number(value), "low": None, "high": None}
    if row is not None:
        estimate.update(low=_number(row.low), high=_number(row.high))
    return estimate


def _metrics(metrics: Mapping[str, dict], intervals: dict, directions: Mapping[str, bool]) -> list[dict]:
    rows = []
    for metric, higher_is_better in directions.items():
        row = {"metric": metric, "higher_is_better": higher_is_better}
        for name, values in metrics.items():
            row[name] = _estimate(values[metric], intervals.get((name, metric)))
        if CHAMPION in metrics:
            difference = metrics[CHALLENGER][metric] - metrics[CHAMPION][metric]
            interval = intervals.get((f"{CHALLENGER} - {CHAMPION}", metric))
            row["difference"] = _estimate(difference, interval)
            if interval is not None:
                # Of the resamples, the share in which the challenger did better.
                above = interval.share_above_zero
                row["difference"]["share_challenger_better"] = _number(above if higher_is_better else 1 - above)
        rows.append(row)
    return rows


def _calibration(severity: np.ndarray, outputs: pd.DataFrame, metrics: Mapping[str, float]) -> dict:
    table = reliability_table(severity, outputs["p_ksi"].to_numpy(dtype=float))
    return {"brier": _number(metrics["ksi_brier"]), "ece": expected_calibration_error(table),
            "bins": [{key: _number(value) for key, value in row.items()} for row in table.to_dict("records")]}


def _by_police_force(frame: pd.DataFrame, outputs: Mapping[str, pd.DataFrame]) -> list[dict]:
    severity = severity_of(frame, "test")
    rows = []
    for force, here in frame.reset_index(drop=True).groupby("police_force", dropna=True).indices.items():
        ksi = is_ksi(severity[here])
        row = {"police_force": int(force), "name": LABELS["police_force"].get(int(force), f"code {int(force)}"),
               "rows": len(here), "ksi": int(ksi.sum()), "observed_ksi_share": float(ksi.mean()),
               "enough_ksi": bool(ksi.sum() >= MIN_FORCE_KSI and (~ksi).any()), "rank": None}
        for name, output in outputs.items():
            part = output.iloc[here].reset_index(drop=True)
            metrics = test_metrics(severity[here], ModelScores.from_outputs(name, part))
            row[name] = {"expected_ksi": float(part["p_ksi"].sum()),
                         **{m: _number(metrics[m]) if row["enough_ksi"] else None for m in FORCE_METRICS}}
        if CHAMPION in outputs and row["enough_ksi"]:
            row["pr_auc_difference"] = row[CHALLENGER]["ksi_pr_auc"] - row[CHAMPION]["ksi_pr_auc"]
        rows.append(row)
    ranked = sorted((r for r in rows if "pr_auc_difference" in r), key=lambda r: -r["pr_auc_difference"])
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    flagged = sorted((r for r in rows if "pr_auc_difference" not in r), key=lambda r: (-r["ksi"], r["police_force"]))
    return ranked + flagged


def build_evidence(decision: Mapping, frame: pd.DataFrame, challenger: pd.DataFrame, champion: pd.DataFrame | None,
                   directions: Mapping[str, bool], resamples: int = 1000, seed: int = 0) -> dict:
    """The comparison (module docstring) as a JSON-ready dict.

    `decision` is `PromotionDecision.details()`; `challenger` and `champion` are the two versions' outputs on
    the labelled test rows `frame`, row for row (`champion` None when there is none to compare with);
    `directions` maps each metric to report to whether higher is better."""
    severity = severity_of(frame, "test")
    outputs = {CHALLENGER: challenger.reset_index(drop=True)}
    if champion is not None:
        outputs[CHAMPION] = champion.reset_index(drop=True)
    metrics = {name: test_metrics(severity, ModelScores.from_outputs(name, output)) for name, output in outputs.items()}
    dates = pd.to_datetime(frame["date"])
    return {
        "model_name": decision["model_name"],
        "challenger_version": decision["version"],
        "champion_version": decision["champion_version"] if champion is not None else None,
        "run_id": decision["run_id"],
        "decision": {key: decision[key] for key in ("promoted", "primary_metric", "reason")},
        "test_rows": len(frame),
        "test_ksi": int(is_ksi(severity).sum()),
        "test_period": [f"{dates.min():%Y-%m-%d}", f"{dates.max():%Y-%m-%d}"],
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": 0.95, "paired": True},
        "metrics": _metrics(metrics, _intervals(severity, outputs, resamples, seed), directions),
        "calibration": {name: _calibration(severity, output, metrics[name]) for name, output in outputs.items()},
        "min_force_ksi": MIN_FORCE_KSI,
        "police_forces": _by_police_force(frame, outputs),
    }


# -- how it reads --------------------------------------------------------------------------------


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _with_interval(cell: dict | None, signed: bool = False) -> str:
    if cell is None:
        return "–"
    text = _fmt(cell["estimate"], signed)
    if cell["low"] is not None:
        text += f" ({_fmt(cell['low'], signed)} to {_fmt(cell['high'], signed)})"
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _versions(evidence: dict) -> str:
    challenger = f"version {evidence['challenger_version']}"
    if evidence["champion_version"] is None:
        return f"{challenger} (no champion to compare with)"
    return f"{challenger} against champion version {evidence['champion_version']}"


def markdown(evidence: dict) -> str:
    """Every table of the evidence, for people (`promotion/evidence.md`)."""
    decision = evidence["decision"]
    has_champion = evidence["champion_version"] is not None
    names = [CHALLENGER, CHAMPION] if has_champion else [CHALLENGER]
    parts = [
        f"# Promotion evidence: {evidence['model_name']} {_versions(evidence)}",
        f"**{'Promoted' if decision['promoted'] else 'Not promoted'}** on {decision['primary_metric']}: "
        f"{decision['reason']}.",
        f"Test rows: {evidence['test_rows']:,} collisions ({evidence['test_ksi']:,} KSI), "
        f"{evidence['test_period'][0]} to {evidence['test_period'][1]}. Intervals: 95% paired bootstrap "
        f"({evidence['bootstrap']['resamples']:,} resamples).",
        "## Metrics",
        _table(["metric", *names, *(["challenger - champion", "share of resamples challenger better"]
                                    if has_champion else [])],
               [[row["metric"] + ("" if row["higher_is_better"] else " (lower is better)"),
                 *(_with_interval(row[name]) for name in names),
                 *([_with_interval(row["difference"], signed=True),
                    _fmt(row["difference"].get("share_challenger_better"))] if has_champion else [])]
                for row in evidence["metrics"]]),
        "## Calibration of P(KSI)",
        _table(["version", "Brier score", "expected calibration error"],
               [[name, _fmt(evidence["calibration"][name]["brier"]), _fmt(evidence["calibration"][name]["ece"])]
                for name in names]),
    ]
    for name in names:
        parts += [f"Reliability, {name} (bins of equal count):",
                  _table(["P(KSI) from", "to", "collisions", "mean P(KSI)", "observed KSI share"],
                         [[_fmt(b["p_low"]), _fmt(b["p_high"]), f"{b['rows']:,.0f}", _fmt(b["mean_predicted"]),
                           _fmt(b["observed_ksi_share"])] for b in evidence["calibration"][name]["bins"]])]
    parts += [
        "## KSI quality by police force",
        f"Forces with fewer than {evidence['min_force_ksi']} KSI collisions in the test rows are flagged and "
        "not ranked." + (" The others are ranked by the challenger's PR-AUC minus the champion's." if has_champion
                         else ""),
        _table(["rank", "police force", "collisions", "KSI", *(f"expected KSI, {n}" for n in names),
                *(f"PR-AUC, {n}" for n in names), *(f"ROC-AUC, {n}" for n in names)],
               [[str(f["rank"]) if f["rank"] else ("too few KSI" if not f["enough_ksi"] else "–"), f["name"],
                 f"{f['rows']:,}", f"{f['ksi']:,}", *(f"{f[n]['expected_ksi']:.1f}" for n in names),
                 *(_fmt(f[n]["ksi_pr_auc"]) for n in names), *(_fmt(f[n]["ksi_roc_auc"]) for n in names)]
                for f in evidence["police_forces"]]),
    ]
    return "\n\n".join(parts) + "\n"


def summary(evidence: dict) -> str:
    """A few sentences for the version's description."""
    has_champion = evidence["champion_version"] is not None
    by_metric = {row["metric"]: row for row in evidence["metrics"]}
    lines = [f"{SUMMARY_HEADING}: {_versions(evidence)}",
             f"{'Promoted' if evidence['decision']['promoted'] else 'Not promoted'}: {evidence['decision']['reason']}.",
             f"On the same {evidence['test_rows']:,} test collisions ({evidence['test_ksi']:,} KSI), with 95% "
             "bootstrap intervals:"]
    for metric in dict.fromkeys((evidence["decision"]["primary_metric"], *SUMMARY_METRICS)):
        row = by_metric[metric]
        line = f"* {metric}: {_with_interval(row[CHALLENGER])}"
        if has_champion:
            line += (f" against {_with_interval(row[CHAMPION])}; difference "
                     f"{_with_interval(row['difference'], signed=True)}")
        lines.append(line)
    calibration = evidence["calibration"]
    line = f"* expected calibration error: {_fmt(calibration[CHALLENGER]['ece'])}"
    lines.append(line + (f" against {_fmt(calibration[CHAMPION]['ece'])}" if has_champion else ""))
    forces = evidence["police_forces"]
    enough = [f for f in forces if f["enough_ksi"]]
    text = (f"* police forces: {len(enough)} of {len(forces)} have at least {evidence['min_force_ksi']} KSI "
            "collisions")
    if has_champion and enough:
        better = sum(f["pr_auc_difference"] > 0 for f in enough)
        text += f"; the challenger's PR-AUC is higher in {better} of them"
    lines.append(text + ".")
    lines.append(f"Every table: artifacts `{EVIDENCE_MARKDOWN}` and `{EVIDENCE_JSON}` of run {evidence['run_id']}.")
    return "\n".join(lines)


def with_summary(description: str | None, text: str) -> str:
    """`description` with `text` as its evidence summary (an earlier one replaced), within MLflow's limit."""
    kept = (description or "").split(SUMMARY_HEADING, 1)[0].rstrip()
    room = MAX_DESCRIPTION - len(text) - 2
    if len(kept) > room:
        kept = kept[: max(room - 1, 0)] + "…"
    return f"{kept}\n\n{text}" if kept else text


def record_evidence(evidence: dict, client: mlflow.MlflowClient | None = None) -> None:
    """Log the evidence to the challenger's run and summarise it in the version's description."""
    client = client or mlflow.MlflowClient()
    client.log_dict(evidence["run_id"], evidence, EVIDENCE_JSON)
    client.log_text(evidence["run_id"], markdown(evidence), EVIDENCE_MARKDOWN)
    name, version = evidence["model_name"], evidence["challenger_version"]
    description = client.get_model_version(name, version).description
    client.update_model_version(name, version, description=with_summary(description, summary(evidence)))
