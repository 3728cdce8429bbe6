"""The severity model, its evaluation and its registration, on small synthetic data.

The MLflow tests run notebooks/02_train.py headless (lib.runner.executor.execute) against the session's
private MLflow, PostgreSQL and S3, on synthetic curated years written to their own lake prefix.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import date, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from lib.data.curated import CURATED, build_curated
from lib.data.features import FEATURE_COLUMNS, LABEL_COLUMNS, LEAKAGE_COLUMNS, PERSONAL_COLUMNS
from lib.data.lake import Lake
from lib.data.synth import generate
from lib.modeling.candidates import BASELINES, FAMILIES, fit_families, fit_gbm
from lib.modeling.evaluation import _resample_weights, _SortedScore, bootstrap_auc, max_f1_threshold
from lib.modeling.model import (
    OUTPUT_COLUMNS,
    FastCategoryCodes,
    FastEncoding,
    ModelInputError,
    _one_hot_encoder,
    categorical_mask,
    feature_matrix,
)
from lib.modeling.promotion_evidence import EVIDENCE_JSON, SUMMARY_HEADING
from lib.modeling.split import split_by_labels_known, split_by_years
from lib.modeling.training_run import (
    DESCRIPTION_TAG,
    EXPERIMENT_KIND_TAG,
    MODEL_DEVELOPMENT,
    attach_executed_notebook,
    contexts,
    experiments_url,
    run_name,
)
from lib.runner.executor import execute
from lib.store import db

YEARS = range(2014, 2019)
COLLISIONS_PER_YEAR = 2000


@pytest.fixture(scope="module")
def curated() -> pd.DataFrame:
    tables = generate(YEARS, COLLISIONS_PER_YEAR, seed=11)
    return build_curated(tables.collisions, tables.vehicles, tables.casualties)


@pytest.fixture(scope="module")
def parts(curated) -> dict[str, pd.DataFrame]:
    return split_by_years([2014, 2015, 2016], 2017, 2018).apply(curated)


@pytest.fixture(scope="module")
def model(parts):
    return fit_gbm(parts["train"], parts["validation"], seed=0)


# -- the model's inputs ----------------------------------------------------------------------------


def with_leakage(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`frame` plus every leakage and personal column, filled with values that track the target."""
    rng = np.random.default_rng(seed)
    severity = frame["collision_severity"].to_numpy()
    extra = {column: severity * 10 + rng.integers(0, 3, len(frame)) for column in (*LEAKAGE_COLUMNS, *PERSONAL_COLUMNS)}
    return frame.assign(**extra)


def test_leakage_columns_change_neither_the_inputs_nor_the_predictions(parts):
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    assert np.array_equal(feature_matrix(with_leakage(train, 1)), feature_matrix(train), equal_nan=True)

    clean = fit_gbm(train, validation, seed=3)
    leaky = fit_gbm(with_leakage(train, 1), with_leakage(validation, 2), seed=3)
    pd.testing.assert_frame_equal(clean.predict(test), leaky.predict(with_leakage(test, 4)))
    assert clean.alert_threshold == leaky.alert_threshold


def test_extra_columns_are_ignored_and_missing_features_are_named(model, parts):
    test = parts["test"]
    pd.testing.assert_frame_equal(model.predict(test), model.predict(test[FEATURE_COLUMNS]))
    with pytest.raises(ModelInputError, match="speed_limit, hour"):
        model.predict(test.drop(columns=["hour", "speed_limit"]))


def test_predictions_follow_the_documented_rules(model, parts):
    output = model.predict(parts["test"])
    assert list(output.columns) == OUTPUT_COLUMNS
    assert np.allclose(output[["p_fatal", "p_serious", "p_slight"]].sum(axis=1), 1.0)
    assert np.allclose(output["p_ksi"], output["p_fatal"] + output["p_serious"])
    assert output["ksi_alert"].equals(output["p_ksi"] >= model.alert_threshold)
    # No alert means slight; an alert means fatal or serious.
    assert (output.loc[~output["ksi_alert"], "predicted_severity"] == 3).all()
    assert output.loc[output["ksi_alert"], "predicted_severity"].isin([1, 2]).all()
    assert 0 < output["ksi_alert"].mean() < 1


def test_a_validation_period_without_fatal_collisions_still_trains(parts):
    validation = parts["validation"]
    no_fatal = validation[validation["collision_severity"] != 1]
    model = fit_gbm(parts["train"], no_fatal, seed=0)
    probabilities = model.probabilities(parts["test"])
    assert np.isfinite(model.alert_threshold) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[:, 0] > 0).all()  # P(fatal | KSI) is learnt from the training rows


def test_the_agreed_risks_only_raise_the_boosted_ksi_probability(model, parts):
    rows = parts["test"].head(300)
    for column, low, high in (
        ("speed_limit", 20, 70),
        ("vehicles_motorcycle", 0, 1),
        ("vehicles_pedal_cycle", 0, 1),
        ("pedestrian_involved", 0, 1),
    ):
        safer = model.predict(rows.assign(**{column: low}))["p_ksi"]
        riskier = model.predict(rows.assign(**{column: high}))["p_ksi"]
        assert (riskier >= safer - 1e-12).all(), column
        assert (riskier > safer).any(), column
    # Darkness is constrained through `darkness`, but light_conditions also enters as a code of its own, which
    # no constraint can order: a row may move against darkness by a little, the collisions as a whole never.
    daylight = model.predict(rows.assign(light_conditions=1))["p_ksi"]
    unlit = model.predict(rows.assign(light_conditions=6))["p_ksi"]  # darkness without lighting
    assert (unlit > daylight).mean() > 0.9 and unlit.mean() > daylight.mean() * 1.1
    assert (unlit >= daylight * 0.9).all()


def test_the_selected_family_is_the_blend_unless_one_family_is_clearly_better(parts):
    families = fit_families(parts["train"], parts["validation"], seed=0)
    table = families.validation
    assert list(table.index) == list(FAMILIES)
    assert table["ksi_pr_auc"].between(0, 1).all() and table["ksi_brier"].between(0, 1).all()
    ahead = table.index[table["low"] > 0]
    assert families.selected == ("blend" if ahead.empty else table.loc[ahead, "ksi_pr_auc"].idxmax())


# -- the split ---------------------------------------------------------------------------------------


def test_labels_known_split_uses_only_labelled_collisions(curated):
    split = split_by_labels_known(date(2018, 7, 1), label_delay_days=30)
    parts = split.apply(curated)
    last_labelled = date(2018, 6, 1)
    assert parts["test"]["date"].max().date() == last_labelled
    assert parts["test"]["date"].min().date() == last_labelled - timedelta(days=89)
    assert parts["validation"]["date"].max().date() == last_labelled - timedelta(days=90)
    assert parts["validation"]["date"].min().date() == last_labelled - timedelta(days=179)
    assert parts["train"]["date"].max() < parts["validation"]["date"].min()
    assert parts["train"]["date"].min() == curated["date"].min()
    used = sum(len(p) for p in parts.values())
    assert used == (curated["date"] <= pd.Timestamp(last_labelled)).sum()


def test_year_split_must_run_forward():
    with pytest.raises(ModelInputError, match="forward in time"):
        split_by_years([2015, 2016], 2016, 2018)
    with pytest.raises(ModelInputError, match="consecutive"):
        split_by_years([2014, 2016], 2017, 2018)


# -- evaluation ------------------------------------------------------------------------------------


def test_weighted_bootstrap_metrics_match_scikit_learn():
    rng = np.random.default_rng(5)
    ksi = rng.random(400) < 0.2
    for score in (np.round(rng.random(400) + ksi * 0.3, 1), rng.random(400) + ksi * 0.2):  # with and without ties
        weights = _resample_weights(rng, 400, 5)
        roc, ap = _SortedScore(score, ksi).metrics(weights)
        for i, w in enumerate(weights):
            assert roc[i] == pytest.approx(roc_auc_score(ksi, score, sample_weight=w), abs=1e-12)
            assert ap[i] == pytest.approx(average_precision_score(ksi, score, sample_weight=w), abs=1e-12)


def test_bootstrap_intervals_contain_the_estimate_and_separate_a_useless_model():
    rng = np.random.default_rng(6)
    severity = np.where(rng.random(2000) < 0.2, 2, 3)
    scores = {"good": rng.random(2000) + (severity == 2) * 0.5, "noise": rng.random(2000)}
    table = bootstrap_auc(severity, scores, reference="good", resamples=300)
    rows = table.set_index(["comparison", "metric"])
    assert (
        rows.loc[("good", "ksi_roc_auc"), "low"]
        < rows.loc[("good", "ksi_roc_auc"), "estimate"]
        < rows.loc[("good", "ksi_roc_auc"), "high"]
    )
    assert rows.loc[("good - noise", "ksi_pr_auc"), "low"] > 0
    assert rows.loc[("good - noise", "ksi_roc_auc"), "share_above_zero"] == 1.0
    pd.testing.assert_frame_equal(bootstrap_auc(severity, scores, reference="good", resamples=300), table)


def test_alert_threshold_maximises_validation_f1():
    rng = np.random.default_rng(7)
    ksi = rng.random(300) < 0.25
    score = np.round(rng.random(300) + ksi * 0.4, 2)
    threshold = max_f1_threshold(ksi, score)
    best = max(f1_score(ksi, score >= t) for t in np.unique(score))
    assert f1_score(ksi, score >= threshold) == pytest.approx(best)


# -- training, registration and promotion through the notebook ---------------------------------------


@pytest.fixture(scope="module")
def trained(settings, curated):
    """02_train run twice with the same data and seed; returns (model name, [notebook results])."""
    lake_uri = f"{os.environ['LAKE_URI']}/model-tests-{uuid.uuid4().hex[:6]}"
    lake = Lake(lake_uri, settings)
    for year, rows in curated.groupby("collision_year"):
        lake.write_partition(CURATED, int(year), rows.reset_index(drop=True))
    model_name = f"test_severity_{uuid.uuid4().hex[:6]}"
    own = replace(settings, lake_uri=lake_uri, model_name=model_name)
    parameters = {
        "experiment_name": "test_model",
        "train_years": "2014-2016",
        "validation_year": 2017,
        "test_year": 2018,
        "seed": 5,
        "bootstrap_resamples": 200,
        "importance_rows": 300,
    }
    results = [execute("02_train", parameters, settings=own, progress=False) for _ in range(2)]
    for result in results:
        assert result.ok, result.describe()
    return model_name, results


def test_retraining_is_reproducible_and_a_tie_does_not_take_champion(trained, settings):
    model_name, _ = trained
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2"]
    first, second = (client.get_run(v.run_id).data.metrics for v in versions)
    evaluated = {key for key in first if key != "fit_seconds" and not key.startswith("promotion.")}
    assert {
        "test_ksi_roc_auc",
        "test_ksi_pr_auc",
        "logistic_test_ksi_pr_auc",
        "diff_vs_majority_ksi_pr_auc_ci_low",
        "original_regression_test_macro_f1",
        "test_log_loss",
        "boosted_test_ksi_pr_auc",
        "diff_vs_textbook_ksi_roc_auc",
        "validation_blend_ksi_pr_auc",
    } <= evaluated
    assert {key: first[key] for key in evaluated} == {key: second[key] for key in evaluated}

    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    assert client.get_model_version_by_alias(model_name, "challenger").version == "2"
    with db.session(settings.database_url) as conn:
        events = db.fetch_dicts(
            conn,
            "SELECT event, model_version, details FROM model_events WHERE model_name = %s ORDER BY id",
            (model_name,),
        )
    assert [(e["event"], e["model_version"]) for e in events] == [("promoted", "1"), ("not_promoted", "2")]
    tie = events[1]["details"]
    assert tie["champion_version"] == "1" and tie["score"] == tie["champion_score"] == first["test_ksi_pr_auc"]
    assert client.get_run(versions[1].run_id).data.tags["promotion.event"] == "not_promoted"
    # The tie's evidence: the same model scored twice on the same rows and resamples differs by nothing.
    evidence = mlflow.artifacts.load_dict(f"runs:/{versions[1].run_id}/{EVIDENCE_JSON}")
    assert evidence["champion_version"] == "1" and evidence["decision"]["promoted"] is False
    assert {row["metric"]: (row["difference"]["estimate"], row["difference"]["low"], row["difference"]["high"])
            for row in evidence["metrics"] if row["difference"]["low"] is not None} == {
        "ksi_roc_auc": (0, 0, 0), "ksi_pr_auc": (0, 0, 0), "ksi_brier": (0, 0, 0)}
    assert all(SUMMARY_HEADING in client.get_model_version(model_name, v.version).description for v in versions)


def test_the_run_holds_the_reference_sample_and_figures(trained, settings):
    model_name, _ = trained
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run_id = client.get_model_version_by_alias(model_name, "champion").run_id
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for folder in ("reference", "figures", "data") for a in client.list_artifacts(run_id, folder)
    }
    assert {"reference/reference.parquet", "figures/roc_pr_curves.png", "data/partitions.json"} <= artifacts
    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="reference/reference.parquet", tracking_uri=settings.mlflow_tracking_uri
        )
    )
    assert set(FEATURE_COLUMNS) | {"p_ksi", "predicted_severity"} <= set(reference.columns)
    assert reference["date"].max() <= pd.Timestamp("2016-12-31")  # drawn from the training years


def test_the_executed_notebook_is_attached_to_its_run(trained, settings):
    model_name, results = trained
    first = results[0]
    # The executor passed its run id as the notebook's `notebook_run_id` and attached its archive afterwards.
    champion = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias(model_name, "champion")
    # The runs tagged with that id (attaching again replaces the same files).
    assert champion.run_id in attach_executed_notebook(settings.mlflow_tracking_uri, first.run_id)
    attached = {a.path for a in mlflow.MlflowClient().list_artifacts(champion.run_id, "notebook")}
    assert attached == {f"notebook/{first.output_ipynb.name}", f"notebook/{first.output_html.name}"}


FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
frame = pd.read_parquet(sys.argv[2])
output = mlflow.pyfunc.load_model(sys.argv[1]).predict(frame)
print(json.dumps({"columns": list(output.columns), "records": output.to_dict(orient="list")}))
"""


def test_champion_loads_in_a_fresh_process_and_predicts_from_rows_without_targets(trained, parts, settings, tmp_path):
    model_name, _ = trained
    rows = parts["test"].head(200).drop(columns=LABEL_COLUMNS)
    rows.to_parquet(tmp_path / "rows.parquet")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, f"models:/{model_name}@champion", str(tmp_path / "rows.parquet")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["columns"] == OUTPUT_COLUMNS
    output = pd.DataFrame(result["records"])
    assert np.allclose(output[["p_fatal", "p_serious", "p_slight"]].sum(axis=1), 1.0)
    assert set(output["predicted_severity"]) <= {1, 2, 3}

    champion = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    in_process = champion.predict(rows)
    assert np.allclose(in_process["p_ksi"], output["p_ksi"])
    threshold = champion.metadata.metadata["alert_threshold"]
    assert output["ksi_alert"].equals(output["p_ksi"] >= threshold)
    with pytest.raises(MlflowException, match="speed_limit"):
        mlflow.pyfunc.load_model(f"models:/{model_name}@champion").predict(rows.drop(columns=["speed_limit"]))


# -- how the training run presents itself in MLflow (lib.modeling.training_run) ---------------------------------


def test_the_run_is_named_by_its_periods_in_an_experiment_shown_as_model_development(trained, settings):
    model_name, _ = trained
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(client.get_model_version_by_alias(model_name, "champion").run_id)
    assert run.info.run_name == "train 2014-2016 | validate 2017 | test 2018"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT == "custom_model_development"
    assert experiments_url("http://127.0.0.1:15000/") == "http://127.0.0.1:15000/#/experiments?workflowType=machine_learning"


def test_the_lake_partitions_are_the_run_s_datasets_with_their_checksums(trained, settings):
    model_name, _ = trained
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run_id = client.get_model_version_by_alias(model_name, "champion").run_id
    manifests = mlflow.artifacts.load_dict(f"runs:/{run_id}/data/partitions.json")
    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    assert sorted(by_name) == [f"{CURATED} {year}" for year in YEARS]
    expected_context = {2014: "training", 2015: "training", 2016: "training", 2017: "validation", 2018: "test"}
    for year in YEARS:
        logged = by_name[f"{CURATED} {year}"]
        tags = {tag.key: tag.value for tag in logged.tags}
        manifest = manifests[str(year)]
        assert tags["data_sha256"] == manifest["data_sha256"]
        assert logged.dataset.digest == manifest["data_sha256"][:36]
        assert tags["rows"] == str(manifest["rows"])
        assert tags["mlflow.data.context"] == expected_context[year]
        assert json.loads(logged.dataset.source)["uri"].endswith(f"/{CURATED}/year={year}/")


def test_the_verdicts_are_the_run_s_and_the_version_s_description(trained, settings):
    model_name, _ = trained
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias(model_name, "champion")
    run = client.get_run(version.run_id)
    description = run.data.tags[DESCRIPTION_TAG]
    verdict, evidence = version.description.split(f"\n\n{SUMMARY_HEADING}")
    assert verdict == description and evidence.startswith(": version 1 (no champion to compare with)")
    selected = run.data.params["selected_family"]
    assert f"(`{selected}`, selected on validation)" in description
    for other in (*BASELINES, *(family for family in FAMILIES if family != selected)):
        for metric in ("KSI ROC-AUC", "KSI PR-AUC"):
            assert re.search(rf"\* \*\*[^*]+ {other}\*\* on {metric} \(difference [+-]\d\.\d{{3}}", description), (
                other,
                metric,
            )
    test_pr_auc = run.data.metrics["test_ksi_pr_auc"]
    assert f"KSI PR-AUC {test_pr_auc:.3f}" in description


def test_run_names_use_dates_where_a_period_is_not_whole_years(curated):
    split = split_by_labels_known(date(2018, 7, 1), label_delay_days=30)
    parts = split.apply(curated)
    assert run_name(split, parts) == (
        "train 2014-01-01..2017-12-03 | validate 2017-12-04..2018-03-03 | test 2018-03-04..2018-06-01"
    )
    served = [contexts(split, year) for year in (2016, 2017, 2018)]
    assert served == ["training", "training,validation", "validation,test"]


def test_the_fast_encoding_gives_scikit_learn_s_numbers(parts):
    train, test = (feature_matrix(parts[p]) for p in ("train", "test"))
    mask = categorical_mask()
    fitted = _one_hot_encoder(mask).fit(train)
    test[:5, np.flatnonzero(mask)[0]] = 250  # a code never seen in training
    test[5:10, np.flatnonzero(mask)] = np.nan  # missing codes, seen or not
    expected = fitted.transform(test)
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    assert np.allclose(FastEncoding.of(fitted).transform(test).toarray(), expected)
    # As models registered before the imputer and scaler were unpacked pickled it: they still score the same.
    (_, onehot, categorical), (_, numbers, numeric) = fitted.transformers_[:2]
    earlier = FastEncoding.__new__(FastEncoding)
    earlier.__setstate__({"categorical": categorical, "categories": list(onehot.categories_),
                          "numeric": numeric, "numbers": numbers})
    assert np.allclose(earlier.transform(test).toarray(), expected)


def test_the_fast_category_codes_give_scikit_learn_s_decisions(parts):
    train, test = (feature_matrix(parts[p]) for p in ("train", "test"))
    mask = categorical_mask()
    ksi = parts["train"]["ksi"].to_numpy()
    stock = HistGradientBoostingClassifier(categorical_features=mask, max_iter=30, random_state=0).fit(train, ksi)
    fast = copy.deepcopy(stock)
    FastCategoryCodes.install(fast)
    assert isinstance(fast._preprocessor, FastCategoryCodes)
    test[:5, np.flatnonzero(mask)[0]] = 250  # a code never seen in training
    test[5:10, np.flatnonzero(mask)] = np.nan  # missing codes, seen or not
    test[10:15, np.flatnonzero(~mask)[0]] = np.nan  # a missing number
    assert np.array_equal(fast.decision_function(test), stock.decision_function(test))
