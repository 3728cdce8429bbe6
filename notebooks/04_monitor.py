# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Monitor a window of scored collisions
#
# For one window of days this notebook asks three questions and writes down the answers:
#
# * **Has the input changed?** Each feature of the window's collisions is compared with the reference
#   sample logged with the model that scored them, and so are the model's outputs: the P(KSI)
#   distribution and the shares of predicted severities (Evidently; the full report is saved per window).
# * **Is the model still right?** A collision's true severity is known only `LABEL_DELAY_DAYS` after it
#   happened. Quality (KSI ROC-AUC and PR-AUC, precision and recall at the alert threshold, Brier score,
#   macro-F1, recall per severity, the actual severity shares) is computed for every monitored window whose
#   labels have **all** arrived by the simulated date `as_of`, from those labels only; for the window just
#   ended that is usually weeks later. Each such window also gets an Evidently classification report.
# * **Did the labels drift, or the way they are reported?** The window's KSI share against the model's
#   training sample, within reporting regimes (injury-based or not) and in DfT's adjusted severity
#   (`lib/monitoring/label_drift.py`): a rise the regime explains is a reporting change, not decay.
# * **Where does the model fall short?** Once labels land, per local highway authority and per cell of a
#   latitude/longitude grid, the KSI collisions observed over the latest labelled windows against those the
#   model expected, ranked by an excess shrunk towards the model (`lib/monitoring/places.py`).
# * **Should the model be retrained?** Yes when the mean KSI PR-AUC of the last labelled windows falls
#   below a fraction of the champion's test score, or when too many features drifted in this window
#   and it held enough collisions (`min_drift_rows`) for that drift not to be chance. Before the labels,
#   the windows' estimated quality (from P(KSI) alone) may recommend it too, provisionally: once their labels
#   arrive the recommendation is confirmed or withdrawn. So may label drift that neither reporting nor the
#   model's P(KSI) explains; a reporting change never does.
#
# Every number goes to PostgreSQL (`monitoring_metrics`; the decision to `model_events`), and the
# dashboard `REPORTS_DIR/dashboard.html` is rebuilt from those tables. Running the notebook again with
# the same parameters replaces what it wrote. With `draw_reports = False` (the simulation runner catching
# up, on every monitoring day of a tick but the last) the same numbers are stored, but no Evidently
# report or dashboard is drawn. `lib/monitoring/monitor.py` computes drift and quality,
# `lib/monitoring/retraining.py` holds the retraining rules.

# %% tags=["parameters"]
window_start = ""  # ISO date: the first day of the window
window_end = ""  # ISO date: the last day of the window (inclusive)
as_of = None  # ISO date: the simulated today; None: window_end
model_version = None  # the version whose predictions to monitor; None: the one that scored most of the window
drift_share_threshold = 0.2  # retrain when this share of the features drifted in the window
min_drift_rows = 300  # ... and the window held at least this many collisions (fewer drift by chance)
quality_windows = 4  # labelled windows averaged for the quality rule
quality_fraction = 0.8  # retrain when their mean KSI PR-AUC < this x the champion's test KSI PR-AUC
place_windows = 13  # latest labelled windows pooled per place
place_grid_degrees = 0.25  # grid cell size, degrees of latitude and longitude
place_min_expected = 5.0  # places expecting fewer KSI collisions are listed, not ranked
act_on_estimate = True  # also retrain, provisionally, on the estimated PR-AUC of the windows awaiting labels
draw_reports = True  # False: store the metrics and the decision only, no Evidently report or dashboard

# %%
import logging
import time
from datetime import date

import pandas as pd
from IPython.display import Markdown, display

from lib.config import configure
from lib.data.curated import Window, read_window
from lib.data.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from lib.data.lake import open_lake
from lib.modeling.model_run import load_model_run
from lib.monitoring import estimated_quality, evidently_report, label_drift, monitor, places, retraining
from lib.monitoring.collision_map import latest_window_map
from lib.monitoring.dashboard import CHAMPION_SERIES, mlflow_run_url, write_dashboard
from lib.store.db import session
from lib.store.metrics import DRIFT, ESTIMATED, LABELS, QUALITY

logging.basicConfig(level=logging.INFO, format="%(message)s")
started = time.monotonic()
settings = configure()
monitored = Window.from_parameters(window_start=window_start, window_end=window_end)
start, end = monitored.start, monitored.end
today = date.fromisoformat(as_of) if as_of else end
delay = settings.label_delay_days
database_url = settings.database_url
reports = settings.reports_dir
model_name = settings.model_name
policy = retraining.RetrainingPolicy(
    quality_windows, quality_fraction, drift_share_threshold, min_drift_rows, act_on_estimate
)
lake = open_lake(settings)



# %% [markdown]
# ## The window's predictions and the model's reference
#
# The predictions come from PostgreSQL (written by 03_infer), the features of the same collisions
# from the curated lake, and the reference sample from the MLflow run of the model version that made
# the predictions.

# %%
with session(database_url) as conn:
    versions = monitor.window_model_versions(conn, start, end)
    if not versions:
        raise RuntimeError(f"no predictions for collisions dated {start}..{end} in PostgreSQL: run 03_infer first")
    model_version = str(model_version) if model_version else versions[0]
    predictions = monitor.load_predictions(conn, start, end, model_version)
if predictions.empty:
    raise RuntimeError(f"model version {model_version} scored none of {start}..{end}; versions that did: {versions}")
window = monitor.join_truth(predictions, read_window(lake, monitored, with_labels=True))
model_run = load_model_run(settings.mlflow_tracking_uri, model_name, model_version)
reference = model_run.reference
references = {model_version: reference}  # each version's reference sample, for its windows' label drift
print(
    f"Window {start}..{end}: {len(window):,} collisions scored by {model_name} version {model_version}"
    f"{' (other versions scored some too: ' + ', '.join(versions[1:]) + ')' if len(versions) > 1 else ''}; "
    f"reference sample: {len(reference):,} rows of run {model_run.run_id}."
)

# %% [markdown]
# ## Drift of the features and of the predictions
#
# Evidently picks a test per column from its type and the sample size (for samples above 1,000 rows,
# the normed Wasserstein distance for numbers and the Jensen-Shannon distance for codes, drift above 0.1).
# The features that drifted, most first:

# %%
drift, snapshot = monitor.compute_drift(
    window, reference, CATEGORICAL_FEATURES, NUMERIC_FEATURES, policy.drift_share_threshold, draw=draw_reports
)
report = snapshot and evidently_report.save_report(
    snapshot,
    reports,
    evidently_report.ReportHeading(
        evidently_report.DRIFT,
        start,
        end,
        model_name,
        model_version,
        f"{len(window):,} collisions of the window against {len(reference):,} reference rows",
    ),
)
with session(database_url) as conn:
    monitor.store_metrics(conn, start, end, model_version, DRIFT, drift.metrics(), end)

features = pd.DataFrame(
    {"score": drift.feature_scores, "drifted": drift.feature_drifted, "method": drift.feature_methods}
).sort_values("score", ascending=False)
display(
    Markdown(
        f"**{drift.drifted_features} of {drift.features} features drifted ({drift.share_drifted_features:.0%})**; "
        f"P(KSI) drift score {drift.p_ksi_score:.3f} ({drift.p_ksi_method}, "
        f"{'drifted' if drift.p_ksi_drifted else 'no drift'}). "
        + (f"The full Evidently report: [{report.name}]({report.resolve().as_uri()})." if report else "")
    )
)
display(features[features["drifted"]] if drift.drifted_features else Markdown("No feature drifted."))
pd.DataFrame({"window": drift.predicted_shares, "reference": drift.reference_predicted_shares}).style.format(
    "{:.1%}"
).set_caption("Shares of predicted severity")

# %% [markdown]
# ## Estimated quality, before the labels
#
# The quality this window will show if the model is still calibrated on it: each collision's P(KSI) stands in
# for its unknown label (`lib/monitoring/estimated_quality.py`), beside the same estimate on the reference
# sample. Stored as `estimated.*` now; the realised `quality.*` replace it on the dashboard when the labels
# arrive. It cannot see a change in how severity depends on the features (a reporting change, say).

# %%
threshold = window["alert_threshold"].iloc[0]
estimate = estimated_quality.estimate_quality(window["p_ksi"], threshold)
reference_estimate = estimated_quality.estimate_quality(reference["p_ksi"], threshold)
with session(database_url) as conn:
    monitor.store_metrics(conn, start, end, model_version, ESTIMATED, estimate.metrics(), end)
pd.DataFrame({"this window": estimate.metrics(), "reference sample": reference_estimate.metrics()}).rename(
    index=lambda name: name.removeprefix(f"{ESTIMATED}.")
).style.format("{:.3f}", na_rep="undefined")

# %% [markdown]
# ## Quality where the labels have arrived
#
# The windows below had every label by the simulated date: those whose last label arrived during this
# window (or, when `as_of` is later than the window, on that day: the day the runner comes back to a window
# for its labels), and any older one not evaluated yet. Labels that arrive later are never read.

# %%
completed_since = start if today <= end else today
with session(database_url) as conn:
    due = monitor.windows_awaiting_quality(conn, today, delay, completed_since=completed_since)
    quality_rows, label_sentences = [], []
    for due_start, due_end, due_version in due:
        scored = monitor.join_truth(
            monitor.load_predictions(conn, due_start, due_end, due_version),
            read_window(lake, Window(due_start, due_end), with_labels=True),
        )
        quality = monitor.compute_quality(scored, due_start, due_end, today, delay)
        monitor.store_metrics(
            conn, due_start, due_end, due_version, QUALITY, quality.metrics(), quality.known_at
        )
        if due_version not in references:
            references[due_version] = load_model_run(settings.mlflow_tracking_uri, model_name, due_version).reference
        labels = label_drift.compare_window(scored, references[due_version])
        monitor.store_metrics(conn, due_start, due_end, due_version, LABELS, labels.metrics(), quality.known_at)
        label_sentences.append(f"**{due_start}..{due_end}**: {labels.sentence()}")
        snapshot = monitor.classification_snapshot(scored, scored["alert_threshold"].iloc[0]) if draw_reports else None
        if snapshot is not None:
            evidently_report.save_report(
                snapshot,
                reports,
                evidently_report.ReportHeading(
                    evidently_report.QUALITY,
                    due_start,
                    due_end,
                    model_name,
                    due_version,
                    f"{quality.labelled_rows:,} collisions whose labels had all arrived by {quality.known_at}",
                ),
            )
        elif draw_reports:
            label_sentences.append(
                f"**{due_start}..{due_end}**: no Evidently quality report, as its {len(scored):,} labelled collisions "
                f"were all {'KSI' if scored['ksi'].all() else 'slight'}: a classification report needs both classes."
            )
        quality_rows.append(
            {
                "window": f"{due_start}..{due_end}",
                "model_version": due_version,
                "labelled": quality.labelled_rows,
                **quality.values,
                "labels": labels.verdict,
            }
        )
if quality_rows:
    shown = [
        "window",
        "model_version",
        "labelled",
        "ksi_roc_auc",
        "ksi_pr_auc",
        "ksi_precision",
        "ksi_recall",
        "ksi_brier",
        "macro_f1",
        "labels",
    ]
    display(pd.DataFrame(quality_rows)[shown].set_index("window"))
    display(Markdown("\n\n".join(label_sentences)))
else:
    display(
        Markdown(
            f"No monitored window completed its labels between {completed_since} and {today}; this window's arrive on "
            f"{monitor.labels_known_at(end, delay)}."
        )
    )

# %% [markdown]
# ## Observed against expected, by place
#
# Over the latest `place_windows` labelled windows as of this run, per local highway
# authority and per grid cell, the KSI collisions observed against the sum of P(KSI), their difference with a
# 95% interval, and the ratio shrunk towards the model by empirical Bayes. Places expecting fewer than
# `place_min_expected` KSI collisions are listed, never ranked. The dashboard shows the latest snapshot.

# %%
place_policy = places.PlacePolicy(place_windows, place_grid_degrees, place_min_expected)
pooled = []
if draw_reports:  # a runner catching up pools them once, on the last monitoring day of its tick
    with session(database_url) as conn:
        labelled, pooled = places.labelled_collisions(conn, lake, today, place_policy.windows)
        if pooled:
            place_snapshot = places.place_snapshot(labelled, pooled, today, place_policy)
            places.store_snapshot(conn, place_snapshot)
if pooled:
    display(Markdown(place_snapshot.summary()))
    shown = ["level", "rank", "name", "collisions", "observed", "expected", "excess", "shrunk_ratio", "shrunk_excess"]
    display(place_snapshot.places.groupby("level").head(5)[shown].set_index(["level", "rank"]))
else:
    display(Markdown("No labelled window to pool by place in this run: the places keep their latest snapshot."))

# %% [markdown]
# ## The retraining decision and the dashboard

# %%
champion_scores = {key: model_run.metrics[key] for key in CHAMPION_SERIES if key in model_run.metrics}
with session(database_url) as conn:
    champion_pr_auc = champion_scores.get("test_ksi_pr_auc")
    decision = retraining.decide_from_metrics(
        conn, model_version, today, champion_pr_auc, policy, reference_estimate.ksi_pr_auc
    )
    retraining.record_decision(conn, decision, model_name)
    reviews = retraining.review_provisional(conn, model_name, today)  # provisional decisions whose labels arrived
    dashboard = None
    if draw_reports:
        # The map shows the latest monitored window, which a run for an older window's labels is not.
        latest_window, latest = latest_window_map(conn)
        dashboard = write_dashboard(
            conn,
            reports,
            champion_scores,
            policy,
            latest_collisions=latest,
            latest_window=latest_window,
            champion_run_url=mlflow_run_url(settings.mlflow_tracking_uri, model_run.run_id),
        )

reviewed = "".join(f"{review.summary()}\n\n" for review in reviews)
display(
    Markdown(
        f"**{decision.summary()}**\n\n{reviewed}"
        + (f"Dashboard: [{dashboard.name}]({dashboard.resolve().as_uri()}). " if dashboard else "")
        + f"The notebook took {time.monotonic() - started:.1f} s."
    )
)
