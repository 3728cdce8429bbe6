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
# # 03 · Score a window of collisions
#
# This notebook forecasts the severity of every collision dated in one window of days and stores the
# forecasts in PostgreSQL (`predictions`), where monitoring (04_monitor) and the dashboards read them.
#
# 1. The model is looked up in the MLflow registry: `model_uri` names an alias (`champion`) or a
#    version, and the rows record the version it points at now, with its KSI alert threshold.
# 2. The window's collisions come from the curated lake partitions of the years it touches. The
#    target columns are dropped on reading: the model sees only what was known at the scene.
# 3. The model scores them, in this process, or through a model server (`predict_url`, started by
#    `make serve`) in batches, retrying while the server restarts. Both give the same numbers.
# 4. One row per collision and model version is written: P(fatal), P(serious), P(slight),
#    P(KSI) = P(fatal) + P(serious), the predicted severity and the KSI alert (P(KSI) at or above the
#    threshold). Rerunning a window replaces its rows in one transaction, never duplicating them.
#
# A window without collisions is a normal outcome: nothing is scored and the window's rows are cleared.
# `lib/modeling/inference.py` does the work and documents the rules.

# %% tags=["parameters"]
start_date = ""  # ISO date: the first collision date of the window
end_date = ""  # ISO date: the last collision date of the window (inclusive)
model_uri = None  # None: MODEL_VERSION if pinned, else MODEL_ALIAS of MODEL_NAME (models:/name@alias)
predict_url = None  # None or "": score in this process; else a model server such as http://127.0.0.1:15001

# %%
import time

started = time.monotonic()

import logging

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from lib.config import configure
from lib.data.curated import Window, read_window
from lib.data.lake import open_lake
from lib.modeling import inference

logging.basicConfig(level=logging.INFO, format="%(message)s")
settings = configure()
window = Window.parse(start_date, end_date)
model = inference.resolve_model(model_uri or settings.model_uri, settings.mlflow_tracking_uri)
lake = open_lake(settings)
how = f"by the model server at {predict_url}" if predict_url else "in this process"
print(f"Window {window}: {model.describe()}, scoring {how}.")

# %% [markdown]
# ## Scoring the window

# %%
collisions = read_window(lake, window)
scoring_started = time.monotonic()
if collisions.empty:
    print(f"No curated collisions are dated {window}: nothing to score.")
    predictions = inference.no_predictions()
elif predict_url:
    predictions = inference.HttpScorer(predict_url, model.input_columns, progress=False).score(collisions)
else:
    predictions = inference.InProcessScorer(model, settings.mlflow_tracking_uri).score(collisions)
scoring_seconds = time.monotonic() - scoring_started
written = inference.write_predictions(settings.database_url, window, model, collisions, predictions)

# %% [markdown]
# ## Summary

# %%
stats = inference.summary(predictions)
if written:
    display(Markdown(
        f"**{stats['collisions']:,} collisions scored** in {scoring_seconds:.1f} s by {model.name} version "
        f"{model.version}; **{stats['alerts']:,} KSI alerts** ({stats['alert_share']:.1%}) at threshold "
        f"{model.alert_threshold:.3f}. P(KSI): mean {stats['mean_p_ksi']:.3f}, median {stats['p_ksi_p50']:.3f}, "
        f"10th-90th percentile {stats['p_ksi_p10']:.3f}-{stats['p_ksi_p90']:.3f}."
    ))
    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=72)
    ax.hist(predictions["p_ksi"], bins=30, color="#4c72b0")
    ax.axvline(model.alert_threshold, color="#c44e52", lw=1.5, label="alert threshold")
    ax.set(title=f"P(KSI) of the {written:,} collisions dated {window}", xlabel="P(KSI)", ylabel="collisions")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    top = collisions[["collision_index", "date"]].join(predictions)
    display(top.nlargest(5, "p_ksi").style.format({"date": "{:%Y-%m-%d}"}, precision=3).hide(axis="index"))
else:
    display(Markdown(f"**No collisions scored** for {window}; its earlier rows for version {model.version}, "
                     "if any, were removed."))
print(f"The whole notebook took {time.monotonic() - started:.1f} s.")
