"""How a training run presents itself in MLflow: the experiment's kind, the run's name, its data, its verdict.

* The experiment is tagged `mlflow.experimentKind` = `custom_model_development`, the tag MLflow's UI sets
  when one picks "machine learning" for an experiment, so it shows runs and models instead of the GenAI
  overview (traces, tokens). MLflow 3's UI also keeps a browser-wide workflow type, GenAI by default;
  `experiments_url` opens the UI on the machine-learning one.
* A run is named by what it did: `train 2014-2016 | validate 2017 | test 2018`, with dates instead of
  years where a period is not whole years (the simulation's retraining).
* Every curated lake partition the run read is logged as an MLflow dataset (`mlflow.log_input`): its
  location in the lake as source, the data file's SHA-256 as digest (shortened to MLflow's 36
  characters; the whole checksum, the rows and the source files' checksums as input tags), and the
  periods it served as context (`training`, `validation`, `test`).
* The verdict against each baseline is the run's description (`mlflow.note.content`) and the
  registered version's description.
* The executed notebook (ipynb and HTML) is attached to every run it made, under `notebook/`
  (`attach_executed_notebook`, called by the notebook executor).
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from lib.data.lake import Lake, Partition
from lib.modeling.split import Split

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
DIGEST_LENGTH = 36  # MLflow's datasets.digest column
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
NOTEBOOK_ARTIFACT_DIR = "notebook"


def open_experiment(name: str) -> str:
    """Make `name` the active experiment (created if absent), shown as model development; its id."""
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
    return experiment.experiment_id


def experiments_url(tracking_uri: str) -> str:
    """The MLflow UI's experiment list in its machine-learning view (not the GenAI default)."""
    return tracking_uri.rstrip("/") + "/#/experiments?workflowType=machine_learning"


def _period(first: date, last: date) -> str:
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31):
        return str(first.year) if first.year == last.year else f"{first.year}-{last.year}"
    return f"{first}..{last}"


def run_name(split: Split, parts: dict[str, pd.DataFrame]) -> str:
    """`train 2014-2016 | validate 2017 | test 2018`, or the dates of periods that are not whole years."""
    train_start = split.train_start or pd.Timestamp(parts["train"]["date"].min()).date()
    periods = {"train": (train_start, split.train_end), "validate": split.validation, "test": split.test}
    return " | ".join(f"{verb} {_period(*period)}" for verb, period in periods.items())


def contexts(split: Split, year: int) -> str:
    """The periods of `split` that a calendar year's partition served, e.g. `training` or `validation,test`."""
    served = [
        CONTEXTS[part]
        for part, (start, end) in split.ranges().items()
        if (start is None or start.year <= year) and year <= end.year
    ]
    return ",".join(served)


def log_partitions(lake: Lake, partitions: list[Partition], split: Split) -> None:
    """Log each partition to the active run as a dataset with its checksums (module docstring)."""
    datasets, context_list, tags_list = [], [], []
    for partition in partitions:
        manifest = partition.manifest
        uri = f"{lake.uri.rstrip('/')}/{Lake.partition_prefix(partition.dataset, partition.year)}"
        with warnings.catch_warnings():  # file:// matches two equivalent local sources; either will do
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
        name, digest = f"{partition.dataset} {partition.year}", manifest["data_sha256"][:DIGEST_LENGTH]
        datasets.append(MetaDataset(source, name=name, digest=digest))
        context_list.append(contexts(split, partition.year))
        tags_list.append(
            {
                "data_sha256": manifest["data_sha256"],
                "rows": str(manifest["rows"]),
                **{f"source_sha256.{table}": checksum for table, checksum in manifest.get("source_sha256", {}).items()},
            }
        )
    mlflow.log_inputs(datasets=datasets, contexts=context_list, tags_list=tags_list)


def describe(run_id: str, text: str, model_name: str | None = None, version: str | None = None) -> None:
    """Make `text` (markdown) the run's description and, when given, the registered version's."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, DESCRIPTION_TAG, text)
    if model_name and version:
        client.update_model_version(model_name, version, description=text)


def attach_executed_notebook(tracking_uri: str, notebook_run_id: str, *paths: str | Path | None) -> list[str]:
    """Attach the outputs of one notebook execution to every MLflow run it tagged `notebook_run_id`.

    For the executor: pass its run id as the notebook's `notebook_run_id` parameter, and once the
    executed notebook and HTML are written, call this with them. The files go under `notebook/` of
    each run (after the run ended). Returns the MLflow run ids."""
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.notebook_run_id = '{notebook_run_id}'",
    )
    for run in runs:
        for path in paths:
            if path is not None and Path(path).exists():
                client.log_artifact(run.info.run_id, str(path), artifact_path=NOTEBOOK_ARTIFACT_DIR)
    return [run.info.run_id for run in runs]


def attach_to_tagged_runs(result, settings) -> str | None:
    """After-run hook of 02_train (lib.runner.executor.after_run_hooks): attach the executed notebook and
    its HTML copy to every MLflow run the notebook tagged with its run id. Returns a warning when that
    did not happen (None when it did, or when a failed run made no MLflow run)."""
    tracking_uri = settings.mlflow_tracking_uri
    try:
        attached = attach_executed_notebook(tracking_uri, result.run_id, result.output_ipynb, result.output_html)
    except Exception as error:  # the run's outcome matters more than this copy of its log
        return (f"the executed notebook was not attached to its MLflow run at {tracking_uri}: "
                f"{type(error).__name__}: {error}")
    if not attached and result.ok:
        return (f"no MLflow run at {tracking_uri} is tagged notebook_run_id={result.run_id}, so the executed "
                "notebook was attached to none")
    return None
