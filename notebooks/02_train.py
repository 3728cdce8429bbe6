# ---
# jupyter:
#   executor:
#     after_run:
#     - lib.modeling.training_run:attach_to_tagged_runs
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: executor
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
# # 02 · Train the collision severity model
#
# This notebook trains the model that forecasts how severe a road collision is (1 fatal, 2 serious,
# 3 slight) from what is known when it happens, compares it with three baselines on the same rows,
# and logs everything to MLflow: parameters, metrics with bootstrap intervals, figures, the data's
# partitions and checksums, a reference sample for monitoring, and the model itself. The new model
# version becomes `champion` only if it beats the current champion on this run's test rows.
#
# * **Model families**, each a P(KSI) model fitted on the training rows and calibrated (Platt scaling)
#   on the validation period: `boosted`, gradient boosting with native categorical codes, monotone
#   constraints for the risks the literature agrees on, and regularisation scaled to the number of rows;
#   `linear`, an L2-regularised logistic regression on one-hot codes; `textbook`, a logistic regression
#   on the agreed risks alone; and `blend`, the calibrated mean of the three. A separate model splits
#   P(KSI) into fatal and serious. `lib/modeling/candidates.py` and `lib/modeling/model.py` document every rule.
# * **Where and when**: besides the collision's own features, the families see the KSI share of earlier
#   collisions in the same ~1 km cell, on the same road class there, and at the same speed limit,
#   learnt from the training rows only and shrunk towards the wider area (`lib/modeling/risk_history.py`).
# * **Selection on the validation period**: the blend is registered unless one family alone beats it
#   on validation KSI PR-AUC with a paired bootstrap interval above zero. The test period only reports.
# * **Baselines**: the majority class; a logistic regression on one-hot codes; and the original
#   project's approach, a regression of the summed casualty severity score cut into classes.
# * **Split by time**: train on earlier data, choose thresholds on the validation period, report on
#   the test period. With `labels_known_by` (the simulation's retraining), only collisions whose
#   severity is known by that date are used: the last 90 labelled days test, the 90 before validate.
#
# **The risks built in as monotone constraints** (P(KSI) may only rise with each), and their sources:
# * speed limit: the power model of speed and crash severity (Nilsson 2004; Elvik, *The Power Model of
#   the relationship between speed and road safety*, TØI report 1034/2009);
# * darkness (daylight < dark, lit < dark, unlit): Plainis, Murray and Pallikaris, *Road traffic
#   casualties: understanding the night-time death toll*, Injury Prevention 12 (2006) 125-128;
# * motorcycles, pedal cycles and pedestrians involved: vulnerable road users, with KSI rates per mile
#   many times a car occupant's (DfT, *Reported road casualties Great Britain*, annual report; WHO,
#   *Global status report on road safety 2018*).

# %% tags=["parameters"]
train_years = ""  # e.g. "2014-2016"; "": every ingested year before the validation year
validation_year = 0  # 0: the year before the test year
test_year = 0  # 0: the last ingested year
labels_known_by = ""  # ISO date, e.g. "2024-03-01": split by the labels known then (the years are ignored)
experiment_name = "accident_severity"
promote = True  # False: register the version without touching the aliases
primary_metric = "ksi_pr_auc"
seed = 42
bootstrap_resamples = 1000
reference_rows = 5000
importance_rows = 2000
notebook_run_id = ""  # set by lib.runner.executor.execute; tagged on the MLflow run, to attach the executed notebook

# %%
import logging
import time
from datetime import date

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from sklearn.calibration import calibration_curve
from sklearn.frozen import FrozenEstimator
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from lib.config import configure, parse_years
from lib.data.curated import CURATED
from lib.data.features import FEATURE_COLUMNS
from lib.data.lake import open_lake
from lib.modeling import training_run
from lib.modeling.candidates import MODEL, evaluate, fit_candidates, run_metrics
from lib.modeling.evaluation import SEVERITY_NAMES, confusion, is_ksi
from lib.modeling.mlflow_model import ALERT_THRESHOLD_PARAM, log_model, log_reference, reference_sample
from lib.modeling.promotion_evidence import EVIDENCE_MARKDOWN
from lib.modeling.registry import check_primary_metric, promote_if_better
from lib.modeling.split import split_by_labels_known, split_by_years

logging.basicConfig(level=logging.INFO, format="%(message)s")
settings = configure()
lake = open_lake(settings)
model_name = settings.model_name
check_primary_metric(primary_metric)
started = time.monotonic()

# %% [markdown]
# ## The data
#
# The curated table has one row per collision. Which years exist, and the split this run uses:

# %%
partitions = {p.year: p for p in lake.partitions(CURATED)}
if not partitions:
    raise RuntimeError(f"{lake.uri} has no curated collisions yet: run 01_ingest first")
if labels_known_by:
    split = split_by_labels_known(date.fromisoformat(labels_known_by), settings.label_delay_days)
else:
    test_year = test_year or max(partitions)
    validation_year = validation_year or test_year - 1
    years = parse_years(train_years, "train_years") if train_years else [y for y in partitions if y < validation_year]
    split = split_by_years(years, validation_year, test_year)
needed = [year for year in sorted(partitions) if split.needs_year(year)]
first = split.train_start.year if split.train_start else split.validation[0].year
absent = [year for year in range(first, split.test[1].year + 1) if year not in partitions]
if absent:
    raise RuntimeError(
        f"the split ({split.rule}) needs curated years the lake {lake.uri} does not have: "
        f"{absent}; ingested: {sorted(partitions)}"
    )
curated = lake.read_dataset(CURATED, needed)
curated = curated[curated["date"] <= pd.Timestamp(split.test[1])]  # nothing later, labelled or not, is looked at
parts = split.apply(curated)
print(f"Split: {split.rule}.")
# One row per part: dates, collisions and class shares (logged to the run, and quoted in the verdict below).
split_table = pd.DataFrame(
    [
        {
            "part": part,
            "first_date": pd.to_datetime(frame["date"]).min().date(),
            "last_date": pd.to_datetime(frame["date"]).max().date(),
            "collisions": len(frame),
            "fatal": int((frame["collision_severity"] == 1).sum()),
            "serious": int((frame["collision_severity"] == 2).sum()),
            "slight": int((frame["collision_severity"] == 3).sum()),
            "ksi_share": float(is_ksi(frame["collision_severity"]).mean()),
        }
        for part, frame in parts.items()
    ]
).set_index("part")
display(split_table)

# %%
shares = curated.assign(severity=curated["collision_severity"].map(SEVERITY_NAMES)).pivot_table(
    index="collision_year", columns="severity", values="collision_index", aggfunc="count", fill_value=0
)[list(SEVERITY_NAMES.values())]
shares["collisions"] = shares.sum(axis=1)
shares["ksi_share"] = (shares["fatal"] + shares["serious"]) / shares["collisions"]
display(shares.style.format({"ksi_share": "{:.1%}"}))

figures = {}
fig, ax = plt.subplots(figsize=(7, 3))
(shares[["fatal", "serious"]].div(shares["collisions"], axis=0) * 100).plot.bar(stacked=True, ax=ax)
ax.set(title="KSI share of collisions by year", ylabel="% of collisions", xlabel="")
plt.tight_layout()
figures["class_shares_by_year.png"] = fig

# %% [markdown]
# ## Training the model families and the baselines
#
# All are fitted on the same training rows; the validation rows stop the boosting, calibrate the
# probabilities, choose each alert threshold and select the family. Nothing here sees the test rows.

# %%
fit_started = time.monotonic()
candidates = fit_candidates(parts["train"], parts["validation"], seed=seed)
fit_seconds = time.monotonic() - fit_started
model = candidates.model
display(candidates.validation.style.format(precision=3, na_rep="–"))
chosen = candidates.validation.loc[candidates.selected]
if candidates.selected == "blend":
    why = "no family alone beats the blend's validation KSI PR-AUC with an interval above zero"
else:
    why = (
        f"it beats the blend's validation KSI PR-AUC by {chosen['pr_auc_minus_blend']:+.3f} "
        f"(95% interval {chosen['low']:+.3f} to {chosen['high']:+.3f})"
    )
display(
    Markdown(
        f"Fitted in {fit_seconds:.1f} s. **Selected: `{candidates.selected}`** (validation KSI PR-AUC "
        f"{chosen['ksi_pr_auc']:.3f}, ROC-AUC {chosen['ksi_roc_auc']:.3f}), because {why}. The boosted family "
        f"stopped after {model.details['n_iter']} iterations; KSI alert threshold {model.alert_threshold:.4f}."
    )
)

# %% [markdown]
# ## Test results
#
# Every metric on the test period, for the registered model (`model`), each family alone and each
# baseline. The KSI ROC-AUC and PR-AUC carry 95% bootstrap intervals (`bootstrap_resamples` resamples
# of the test collisions, the same resamples for every model, so the differences are paired). The
# original regression has no probabilities, hence no Brier score or log loss.

# %%
evaluation = evaluate(candidates, parts["test"], resamples=bootstrap_resamples, seed=seed)
boot = evaluation.bootstrap
intervals = boot[~boot["comparison"].str.contains(" - ")].set_index(["comparison", "metric"])
comparison = evaluation.metrics.copy()
for metric in ("ksi_roc_auc", "ksi_pr_auc"):
    comparison[f"{metric}_95ci"] = [
        f"{intervals.loc[(name, metric), 'low']:.3f}–{intervals.loc[(name, metric), 'high']:.3f}"
        for name in comparison.index
    ]
shown = [
    "ksi_roc_auc",
    "ksi_roc_auc_95ci",
    "ksi_pr_auc",
    "ksi_pr_auc_95ci",
    "macro_f1",
    "balanced_accuracy",
    "recall_fatal",
    "recall_serious",
    "recall_slight",
    "ksi_brier",
    "log_loss",
    "ksi_precision",
    "ksi_recall",
    "alert_rate",
]
display(comparison[shown].style.format(precision=3, na_rep="–"))

differences = boot[boot["comparison"].str.contains(" - ")]
display(differences.style.format(precision=3).hide(axis="index"))


# %%
def verdict(row) -> str:
    name = row["comparison"].split(" - ")[1]
    metric = {"ksi_roc_auc": "KSI ROC-AUC", "ksi_pr_auc": "KSI PR-AUC"}[row["metric"]]
    numbers = (
        f"difference {row['estimate']:+.3f}, 95% interval {row['low']:+.3f} to {row['high']:+.3f}; "
        f"the model is ahead in {row['share_above_zero']:.0%} of resamples"
    )
    if row["low"] > 0:
        return f"* **beats {name}** on {metric} ({numbers}): the interval excludes zero."
    if row["high"] < 0:
        return f"* **is worse than {name}** on {metric} ({numbers}): the interval excludes zero."
    return f"* **cannot be told apart from {name}** on {metric} ({numbers}): the interval spans zero."


test_part = split_table.loc["test"]
own = {metric: intervals.loc[(MODEL, metric)] for metric in ("ksi_roc_auc", "ksi_pr_auc")}
summary = (  # also the MLflow run's and the registered version's description
    f"On the test period ({test_part['first_date']} to {test_part['last_date']}: {test_part['collisions']:,} "
    f"collisions, {test_part['fatal'] + test_part['serious']:,} of them KSI) the model "
    f"(`{candidates.selected}`, selected on validation) reaches "
    f"KSI ROC-AUC {own['ksi_roc_auc']['estimate']:.3f} (95% interval {own['ksi_roc_auc']['low']:.3f} to "
    f"{own['ksi_roc_auc']['high']:.3f}) and KSI PR-AUC {own['ksi_pr_auc']['estimate']:.3f} "
    f"({own['ksi_pr_auc']['low']:.3f} to {own['ksi_pr_auc']['high']:.3f}; a random ranking scores the KSI "
    f"share, {test_part['ksi_share']:.3f}). Against each family and baseline, model minus the other:\n\n"
    + "\n".join(verdict(row) for _, row in differences.iterrows())
)
display(Markdown(summary))

# %% [markdown]
# ## Curves, calibration and errors

# %%
ksi = is_ksi(evaluation.severity)
fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
for name, scores in evaluation.scores.items():
    fpr, tpr, _ = roc_curve(ksi, scores.ksi_score)
    roc_ax.plot(fpr, tpr, label=f"{name} ({evaluation.metrics.loc[name, 'ksi_roc_auc']:.3f})")
    precision, recall, _ = precision_recall_curve(ksi, scores.ksi_score)
    pr_ax.step(recall, precision, where="post", label=f"{name} ({evaluation.metrics.loc[name, 'ksi_pr_auc']:.3f})")
roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
roc_ax.set(title="ROC, KSI (test)", xlabel="false positive rate", ylabel="true positive rate")
pr_ax.axhline(ksi.mean(), color="grey", lw=0.8, ls="--")
pr_ax.set(title="Precision-recall, KSI (test)", xlabel="recall", ylabel="precision")
roc_ax.legend(fontsize=8)
pr_ax.legend(fontsize=8)
plt.tight_layout()
figures["roc_pr_curves.png"] = fig

# %%
fig, (cal_ax, cm_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
for name in (MODEL, "logistic"):
    observed, predicted = calibration_curve(ksi, evaluation.scores[name].ksi_score, n_bins=10, strategy="quantile")
    cal_ax.plot(predicted, observed, marker="o", label=name)
cal_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
cal_ax.set(title="Calibration of P(KSI) (test, deciles)", xlabel="predicted P(KSI)", ylabel="observed KSI share")
cal_ax.legend(fontsize=8)
matrix = confusion(evaluation.severity, evaluation.scores[MODEL].predicted)
cm_ax.imshow(matrix.to_numpy(), cmap="Blues")
for (i, j), count in np.ndenumerate(matrix.to_numpy()):
    cm_ax.text(j, i, f"{count:,}", ha="center", va="center")
cm_ax.set(
    title="Confusion matrix, model (test)",
    xticks=range(3),
    yticks=range(3),
    xticklabels=matrix.columns,
    yticklabels=matrix.index,
    xlabel="predicted",
    ylabel="actual",
)
plt.tight_layout()
figures["calibration_confusion.png"] = fig
display(matrix)

# %% [markdown]
# ## What the model relies on
#
# Permutation importance: how much the test KSI PR-AUC drops when one feature's values are shuffled
# (on a sample of test collisions, to stay fast).

# %%
sample = parts["test"].sample(n=min(importance_rows, len(parts["test"])), random_state=seed)


def ksi_pr_auc(estimator, frame, target):
    return average_precision_score(target, estimator.predict(frame)["p_ksi"])


# FrozenEstimator gives the fitted model the `fit` that scikit-learn's API check asks for; nothing is refitted.
importance = permutation_importance(
    FrozenEstimator(model),
    sample[FEATURE_COLUMNS],
    is_ksi(sample["collision_severity"]),
    scoring=ksi_pr_auc,
    n_repeats=3,
    random_state=seed,
)
importance = pd.DataFrame(
    {"feature": FEATURE_COLUMNS, "mean_drop": importance.importances_mean, "std": importance.importances_std}
).sort_values("mean_drop", ascending=False)
fig, ax = plt.subplots(figsize=(7, 6))
top = importance.head(20).iloc[::-1]
ax.barh(top["feature"], top["mean_drop"], xerr=top["std"])
ax.set(title="Permutation importance (drop in KSI PR-AUC)", xlabel="mean drop")
plt.tight_layout()
figures["permutation_importance.png"] = fig

# %% [markdown]
# ## Logging to MLflow and the promotion decision
#
# One run holds the parameters, every metric (the model's as `test_*`, each baseline's as
# `<baseline>_test_*`, intervals as `*_ci_low/high`), the figures, the data's partitions with their
# checksums (also as MLflow datasets), the reference sample for monitoring (`reference/reference.parquet`)
# and the model (signature and input example). The run is named by its periods and described by the
# verdicts above. The version is registered with the same description, then compared with the current
# champion on the test rows: that comparison (metrics with intervals, calibration, KSI quality by police
# force) goes to the run as `promotion/evidence.md` and `.json`, and its summary to the version's description.

# %%
reference = reference_sample(model, parts["train"], rows=reference_rows, seed=seed)
manifests = {str(year): partitions[year].manifest for year in needed}
training_run.open_experiment(experiment_name)
with mlflow.start_run(run_name=training_run.run_name(split, parts)) as run:
    run_id = run.info.run_id
    mlflow.set_tags({"notebook": "02_train", "split": split.rule, "notebook_run_id": notebook_run_id})
    mlflow.log_params(
        {
            **split.run_params(parts),
            "labels_known_by": labels_known_by or "-",
            "seed": seed,
            "primary_metric": primary_metric,
            "bootstrap_resamples": bootstrap_resamples,
            "lake_uri": lake.uri,
            "data_years": ",".join(map(str, needed)),
            "features": ",".join(FEATURE_COLUMNS),
            "alert_threshold_rule": "max F1 for KSI on validation",
            ALERT_THRESHOLD_PARAM: model.alert_threshold,
            "selected_family": candidates.selected,
            **{f"boosted_{key}": value for key, value in model.details.items() if key not in ("family", "n_iter")},
        }
    )
    for part, row in split_table.iterrows():
        mlflow.log_metrics({f"{part}_collisions": row["collisions"], f"{part}_ksi_share": row["ksi_share"]})
    mlflow.log_metrics(run_metrics(evaluation))
    mlflow.log_metrics({"n_iter": model.details["n_iter"], "fit_seconds": fit_seconds})
    mlflow.log_metrics(
        {
            f"validation_{family}_{metric}": value
            for family, row in candidates.validation.iterrows()
            for metric, value in row.items()
            if metric.startswith("ksi_")
        }
    )
    mlflow.log_dict(manifests, "data/partitions.json")
    training_run.log_partitions(lake, [partitions[year] for year in needed], split)
    mlflow.log_dict({part: [str(start), str(end)] for part, (start, end) in split.ranges().items()}, "data/split.json")
    mlflow.log_text(candidates.validation.to_csv(), "evaluation/validation_selection.csv")
    mlflow.log_text(comparison[shown].to_csv(), "evaluation/test_metrics.csv")
    mlflow.log_text(boot.to_csv(index=False), "evaluation/bootstrap.csv")
    mlflow.log_text(matrix.to_csv(), "evaluation/confusion_matrix.csv")
    mlflow.log_text(importance.to_csv(index=False), "evaluation/permutation_importance.csv")
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"figures/{name}")
    log_reference(reference)
    info = log_model(model, parts["train"], registered_model_name=model_name)
version = str(info.registered_model_version)
training_run.describe(run_id, summary, model_name, version)
print(f"MLflow run {run_id}; registered {model_name} version {version}.")

# %%
if promote:
    decision = promote_if_better(
        model_name,
        version,
        run_id,
        parts["test"],
        settings.database_url,
        primary_metric=primary_metric,
        simulated_date=date.fromisoformat(labels_known_by) if labels_known_by else None,
        bootstrap_resamples=bootstrap_resamples,
        seed=seed,
    )
    outcome = (f"Version {version} is now **{decision.alias}**: {decision.reason}. The comparison with the "
               f"champion (intervals, calibration, police forces) is the run's `{EVIDENCE_MARKDOWN}`.")
else:
    outcome = f"Version {version} was registered without an alias (promote=False)."
display(Markdown(outcome + f"\n\nThe whole notebook took {time.monotonic() - started:.0f} s."))
