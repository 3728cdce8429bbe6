"""The evidence each promotion writes (lib/modeling/promotion_evidence.py), on the session's real MLflow and PostgreSQL.

Two versions of a fresh model name, a logistic regression and the boosted family fitted on synthetic years,
go through the gate as 02_train sends them. Every number the evidence states is then recomputed here from
the registered versions' own predictions with scikit-learn and pandas, not with the project's helpers.
"""

from __future__ import annotations

import json
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from lib.data.curated import build_curated
from lib.data.synth import generate
from lib.modeling.candidates import fit_gbm, fit_logistic
from lib.modeling.mlflow_model import log_model
from lib.modeling.promotion_evidence import EVIDENCE_JSON, EVIDENCE_MARKDOWN, MIN_FORCE_KSI, SUMMARY_HEADING
from lib.modeling.registry import promote_if_better
from lib.modeling.training_run import describe
from lib.store import db

VERDICT = "Beats every baseline on the test year (the verdict 02_train writes)."


@pytest.fixture(scope="module")
def promoted(settings):
    """(model name, test rows, [run ids], [decisions]) after the gate saw a logistic and then a boosted version."""
    tables = generate(range(2015, 2019), 2500, seed=21)
    curated = build_curated(tables.collisions, tables.vehicles, tables.casualties)
    year = curated["collision_year"]
    train, validation, test = curated[year <= 2016], curated[year == 2017], curated[year == 2018]
    test = test.reset_index(drop=True)
    model_name = f"evidence_{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment("test_promotion_evidence")
    run_ids, decisions = [], []
    for model in (fit_logistic(train, validation), fit_gbm(train, validation, seed=3)):
        with mlflow.start_run() as run:
            info = log_model(model, train, registered_model_name=model_name)
        version = str(info.registered_model_version)
        describe(run.info.run_id, VERDICT, model_name, version)
        decisions.append(promote_if_better(model_name, version, run.info.run_id, test, settings.database_url))
        run_ids.append(run.info.run_id)
    return model_name, test, run_ids, decisions


def evidence_of(run_id: str, settings) -> tuple[dict, str]:
    def text(path: str) -> str:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    tracking_uri=settings.mlflow_tracking_uri)
        with open(local) as file:
            return file.read()

    return json.loads(text(EVIDENCE_JSON)), text(EVIDENCE_MARKDOWN)


def predictions(model_name: str, version: str, rows: pd.DataFrame) -> pd.DataFrame:
    return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").predict(rows)


def test_the_second_version_carries_a_comparison_with_the_champion_that_sklearn_confirms(promoted, settings):
    model_name, test, run_ids, decisions = promoted
    evidence, markdown = evidence_of(run_ids[1], settings)
    assert (evidence["challenger_version"], evidence["champion_version"]) == ("2", "1")
    ksi = test["collision_severity"].isin([1, 2]).to_numpy()
    p = {"challenger": predictions(model_name, "2", test)["p_ksi"].to_numpy(),
         "champion": predictions(model_name, "1", test)["p_ksi"].to_numpy()}
    assert evidence["test_rows"] == len(test) and evidence["test_ksi"] == ksi.sum()

    metrics = {row["metric"]: row for row in evidence["metrics"]}
    independent = {"ksi_roc_auc": roc_auc_score, "ksi_pr_auc": average_precision_score, "ksi_brier": brier_score_loss}
    for metric, score in independent.items():
        expected = {name: score(ksi, values) for name, values in p.items()}
        row = metrics[metric]
        for name in p:
            assert row[name]["estimate"] == pytest.approx(expected[name], abs=1e-9), (metric, name)
            assert row[name]["low"] < row[name]["estimate"] < row[name]["high"], (metric, name, row[name])
        difference = expected["challenger"] - expected["champion"]
        assert row["difference"]["estimate"] == pytest.approx(difference, abs=1e-9), metric
        assert row["difference"]["low"] < row["difference"]["high"]
        assert 0 <= row["difference"]["share_challenger_better"] <= 1
    # The decision it documents is the one the gate took, on the same numbers.
    pr_auc = metrics["ksi_pr_auc"]
    promoted_second = pr_auc["challenger"]["estimate"] > pr_auc["champion"]["estimate"]
    assert decisions[1].promoted == promoted_second == evidence["decision"]["promoted"]
    assert decisions[1].score == pytest.approx(pr_auc["challenger"]["estimate"], abs=1e-12)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    assert client.get_model_version_by_alias(model_name, "champion").version == ("2" if promoted_second else "1")

    for name, values in p.items():
        calibration = evidence["calibration"][name]
        observed, predicted = calibration_curve(ksi, values, n_bins=10, strategy="quantile")
        bins = pd.DataFrame(calibration["bins"])
        np.testing.assert_allclose(bins["observed_ksi_share"], observed, atol=1e-12)
        np.testing.assert_allclose(bins["mean_predicted"], predicted, atol=1e-12)
        deciles = pd.DataFrame({"bin": pd.qcut(values, 10, labels=False), "p": values, "ksi": ksi}).groupby("bin")
        gap = (deciles["p"].mean() - deciles["ksi"].mean()).abs() * deciles.size() / len(values)
        assert calibration["ece"] == pytest.approx(gap.sum(), abs=1e-12)
        assert bins["rows"].sum() == len(test)

    forces = {row["police_force"]: row for row in evidence["police_forces"]}
    counts = test.assign(ksi=ksi).groupby("police_force")["ksi"].agg(["size", "sum"])
    assert set(forces) == set(counts.index)
    for force, row in forces.items():
        here = (test["police_force"] == force).to_numpy()
        assert (row["rows"], row["ksi"]) == (counts.loc[force, "size"], counts.loc[force, "sum"])
        assert row["challenger"]["expected_ksi"] == pytest.approx(p["challenger"][here].sum())
        if row["ksi"] >= MIN_FORCE_KSI:
            assert row["enough_ksi"] and row["rank"] is not None
            for name in p:
                assert row[name]["ksi_pr_auc"] == pytest.approx(average_precision_score(ksi[here], p[name][here]))
                assert row[name]["ksi_roc_auc"] == pytest.approx(roc_auc_score(ksi[here], p[name][here]))
        else:
            assert not row["enough_ksi"] and row["rank"] is None and row["challenger"]["ksi_pr_auc"] is None
    ranked = [row for row in evidence["police_forces"] if row["rank"] is not None]
    assert ranked and len(ranked) < len(forces)  # some forces are ranked, some flagged with too few KSI
    assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
    assert [row["pr_auc_difference"] for row in ranked] == sorted((r["pr_auc_difference"] for r in ranked),
                                                                  reverse=True)
    assert "| too few KSI |" in markdown and f"{pr_auc['challenger']['estimate']:.3f}" in markdown

    description = client.get_model_version(model_name, "2").description
    assert description.startswith(VERDICT) and description.count(SUMMARY_HEADING) == 1
    summary = description.split(SUMMARY_HEADING, 1)[1]
    for metric, score in independent.items():
        line = next(line for line in summary.splitlines() if line.startswith(f"* {metric}:"))
        assert f"{score(ksi, p['challenger']):.3f}" in line and f"{score(ksi, p['champion']):.3f}" in line
        assert f"{score(ksi, p['challenger']) - score(ksi, p['champion']):+.3f}" in line
    assert EVIDENCE_JSON in summary and run_ids[1] in summary


def test_the_first_version_gets_evidence_for_itself_and_every_decision_is_recorded(promoted, settings):
    model_name, test, run_ids, decisions = promoted
    evidence, markdown = evidence_of(run_ids[0], settings)
    assert evidence["champion_version"] is None and evidence["decision"]["promoted"] is True
    assert all("champion" not in row and "difference" not in row for row in evidence["metrics"])
    first = predictions(model_name, "1", test)["p_ksi"]
    ksi = test["collision_severity"].isin([1, 2])
    pr_auc = next(row for row in evidence["metrics"] if row["metric"] == "ksi_pr_auc")
    assert pr_auc["challenger"]["estimate"] == pytest.approx(average_precision_score(ksi, first), abs=1e-9)
    assert "no champion to compare with" in markdown

    description = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_model_version(model_name, "1").description
    assert description.startswith(VERDICT) and "no champion to compare with" in description
    with db.session(settings.database_url) as conn:
        events = db.fetch_dicts(conn, "SELECT event, model_version FROM model_events WHERE model_name = %s ORDER BY id",
                                (model_name,))
    assert [e["model_version"] for e in events] == ["1", "2"]
    assert events[1]["event"] == ("promoted" if decisions[1].promoted else "not_promoted")
