"""Which registered model version serves, and why: champion / challenger promotion.

A newly registered version takes the alias `champion` only if it beats the current champion on the
same test rows, on the primary metric (KSI PR-AUC unless configured otherwise); otherwise it takes
`challenger`. Both versions are scored the same way: loaded from the registry as pyfuncs and run on
this training run's test rows, so the comparison also checks that the logged model loads and predicts.
The first version of a model is promoted. "Beats" is strict: a retrain that only ties keeps the old
champion. If the champion's own validation period reaches into these test rows (it learned from them),
the decision's reason says so: that comparison favours the champion. Every decision, with both scores,
goes to `model_events` (event `promoted` / `not_promoted`), to the training run (tags and metrics) and
to the model version (tags), with the evidence behind it (`lib.modeling.promotion_evidence`): the
challenger against the champion on those rows, as artifacts of the run and in the version's description.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import date

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from lib.modeling.evaluation import ModelScores, test_metrics
from lib.modeling.mlflow_model import StaleModel, load_pyfunc
from lib.modeling.model import severity_of
from lib.modeling.model_run import VALIDATION_RANGE_PARAM, range_end
from lib.modeling.promotion_evidence import build_evidence, record_evidence
from lib.store import events
from lib.store.db import session

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# Metrics a promotion may be decided on, and whether higher is better.
PRIMARY_METRICS = {
    "ksi_pr_auc": True,
    "ksi_roc_auc": True,
    "macro_f1": True,
    "balanced_accuracy": True,
    "ksi_brier": False,
    "log_loss": False,
}


class PromotionError(ValueError):
    """A promotion cannot be decided as asked; the message says why."""


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    version: str
    run_id: str
    primary_metric: str
    score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    reason: str

    @property
    def event(self) -> str:
        return events.PROMOTED if self.promoted else events.NOT_PROMOTED

    @property
    def alias(self) -> str:
        return CHAMPION if self.promoted else CHALLENGER

    def details(self) -> dict:
        return {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in asdict(self).items()
        }


def check_primary_metric(name: str) -> None:
    if name not in PRIMARY_METRICS:
        raise PromotionError(f"primary_metric {name!r} is not one of {', '.join(sorted(PRIMARY_METRICS))}")


def current_champion(client: mlflow.MlflowClient, model_name: str) -> str | None:
    """The version holding `champion`, or None when there is none (or no such model yet)."""
    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = aliases.get(CHAMPION)
    return None if version is None else str(version)


def version_outputs(model_name: str, version: str, frame: pd.DataFrame) -> pd.DataFrame:
    """What a registered version says about each row of `frame`, through its pyfunc."""
    model = load_pyfunc(f"models:/{model_name}/{version}")
    columns = model.metadata.get_input_schema().input_names()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PromotionError(f"version {version} of {model_name} needs columns these rows lack: {missing}")
    return model.predict(frame[columns]).reset_index(drop=True)


def outputs_metrics(frame: pd.DataFrame, outputs: pd.DataFrame, name: str) -> dict[str, float]:
    """Test metrics of one version's `outputs` on labelled `frame`."""
    return test_metrics(severity_of(frame, "test"), ModelScores.from_outputs(name, outputs))


def _better(new: float, old: float, higher_is_better: bool) -> bool:
    if math.isnan(new):
        return False
    if math.isnan(old):
        return True
    return new > old if higher_is_better else new < old


def decide_promotion(
    model_name: str, version: str, run_id: str, test_frame: pd.DataFrame, primary_metric: str = "ksi_pr_auc"
) -> tuple[PromotionDecision, dict[str, pd.DataFrame]]:
    """Score the new version and the current champion on `test_frame` and decide (nothing is changed).

    Returns the decision and the outputs it was made on, by version (the champion's only when it could score)."""
    check_primary_metric(primary_metric)
    client = mlflow.MlflowClient()
    outputs = {str(version): version_outputs(model_name, version, test_frame)}
    score = outputs_metrics(test_frame, outputs[str(version)], str(version))[primary_metric]
    champion = current_champion(client, model_name)
    decision = {
        "model_name": model_name,
        "version": str(version),
        "run_id": run_id,
        "primary_metric": primary_metric,
        "score": score,
        "champion_version": champion,
    }
    if champion is None:
        return PromotionDecision(
            **decision, champion_score=None, promoted=True, reason=f"no {CHAMPION} yet: the first model is promoted"
        ), outputs
    try:
        champion_outputs = version_outputs(model_name, champion, test_frame)
    except (PromotionError, MlflowException, StaleModel) as error:
        return PromotionDecision(
            **decision,
            champion_score=None,
            promoted=True,
            reason=f"the {CHAMPION} (version {champion}) cannot score these rows: {error}",
        ), outputs
    outputs[champion] = champion_outputs
    champion_score = outputs_metrics(test_frame, champion_outputs, champion)[primary_metric]
    promoted = _better(score, champion_score, PRIMARY_METRICS[primary_metric])
    comparison = "beats" if promoted else "does not beat"
    reason = (
        f"version {version} {comparison} {CHAMPION} version {champion} on test {primary_metric}: "
        f"{score:.4f} vs {champion_score:.4f} on the same {len(test_frame):,} rows"
    )
    fitted_until = _fitted_until(client, model_name, champion)
    if fitted_until is not None and fitted_until >= pd.Timestamp(test_frame["date"].min()).date():
        reason += (
            f" (the {CHAMPION} was fitted and calibrated on data up to {fitted_until}, which reaches into "
            "this test period: the comparison favours it)"
        )
    return PromotionDecision(**decision, champion_score=champion_score, promoted=promoted, reason=reason), outputs


def _fitted_until(client: mlflow.MlflowClient, model_name: str, version: str) -> date | None:
    """The last day a version's training run learned from (the end of its validation period), if logged."""
    params = client.get_run(client.get_model_version(model_name, version).run_id).data.params
    return range_end(params, VALIDATION_RANGE_PARAM)


def record_decision(decision: PromotionDecision, database_url: str, simulated_date: date | None = None) -> None:
    """Apply the alias, tag the run and the version, and write the `model_events` row."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(decision.model_name, decision.alias, decision.version)
    tags = {
        "promotion.event": decision.event,
        "promotion.alias": decision.alias,
        "promotion.primary_metric": decision.primary_metric,
        "promotion.reason": decision.reason[:5000],
        "promotion.champion_version_before": decision.champion_version or "",
    }
    for key, value in tags.items():
        client.set_tag(decision.run_id, key, value)
        client.set_model_version_tag(decision.model_name, decision.version, key, value)
    for key, value in (("promotion.score", decision.score), ("promotion.champion_score", decision.champion_score)):
        if value is not None and not math.isnan(value):
            client.log_metric(decision.run_id, key, value)
    with session(database_url) as conn:
        events.record(conn, decision.event, decision.model_name, decision.version, decision.details(), simulated_date)
    log.info("%s: version %s is now %s. %s", decision.model_name, decision.version, decision.alias, decision.reason)


def promote_if_better(
    model_name: str,
    version: str,
    run_id: str,
    test_frame: pd.DataFrame,
    database_url: str,
    primary_metric: str = "ksi_pr_auc",
    simulated_date: date | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> PromotionDecision:
    """Decide, write the evidence (before the alias moves, so a server that follows it finds it), record."""
    decision, outputs = decide_promotion(model_name, version, run_id, test_frame, primary_metric)
    champion_outputs = outputs.get(decision.champion_version or "")
    evidence = build_evidence(decision.details(), test_frame, outputs[decision.version], champion_outputs,
                              PRIMARY_METRICS, resamples=bootstrap_resamples, seed=seed)
    record_evidence(evidence)
    record_decision(decision, database_url, simulated_date)
    return decision
