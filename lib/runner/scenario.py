"""A world ready to simulate: collisions in the lake and a champion that has not seen the simulated days.

The demo, the simulation benchmark and the simulation tests all need the same preparation:

* `plan_years`: of the years in the lake, the last is simulated, the one before it tests the model,
  the one before that validates it, and the rest train it; the simulation starts on 1 January of
  the last year. So the champion never sees a collision it will score in the simulation.
* `write_synthetic_mirror`: synthetic raw files (lib/data/synth.py) in a folder laid out like DfT's,
  used as a `file://` STATS19_BASE_URL;
* `ingest` and `train`: 01_ingest and 02_train through the executor, like `make ingestion` and
  `make training-workflow`, stopping at the first failure;
* `ensure_baseline_champion`: a champion trained on the plan's years, training one only when the
  registry has none (a rerun of the demo reuses it) and moving the alias back to it when a
  retraining of an earlier simulation (trained on simulated days) holds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from lib.config import Settings
from lib.data import synth
from lib.modeling.inference import InProcessScorer, resolve_model
from lib.modeling.mlflow_model import StaleModel
from lib.modeling.model_run import TEST_RANGE_PARAM, range_end
from lib.runner import executor, run_result

log = logging.getLogger(__name__)

MIN_YEARS = 4  # train, validation, test, simulation


@dataclass(frozen=True)
class YearPlan:
    train_years: tuple[int, ...]
    validation_year: int
    test_year: int
    simulated_year: int

    @property
    def simulation_start(self) -> date:
        return date(self.simulated_year, 1, 1)

    @property
    def all_years(self) -> tuple[int, ...]:
        return (*self.train_years, self.validation_year, self.test_year, self.simulated_year)

    def train_parameters(self) -> dict:
        """02_train's parameters for this split."""
        first, last = self.train_years[0], self.train_years[-1]
        return {
            "train_years": f"{first}-{last}" if first != last else str(first),
            "validation_year": self.validation_year,
            "test_year": self.test_year,
        }

    def describe(self) -> str:
        train = self.train_parameters()["train_years"]
        return (
            f"train on {train}, validate on {self.validation_year}, test on {self.test_year}, "
            f"simulate from {self.simulation_start}"
        )


def plan_years(years: tuple[int, ...] | list[int]) -> YearPlan:
    """Split consecutive years: the rest train, then validation, test, and the simulated year."""
    years = sorted(set(years))
    if len(years) < MIN_YEARS:
        raise ValueError(
            f"a simulation needs at least {MIN_YEARS} years (train, validation, test, simulated); got {years}"
        )
    if years != list(range(years[0], years[-1] + 1)):
        raise ValueError(f"the years must follow each other without gaps; got {years}")
    return YearPlan(tuple(years[:-3]), years[-3], years[-2], years[-1])


def write_synthetic_mirror(
    folder: Path, years: tuple[int, ...], collisions_per_year: int, seed: int = 0, shift: synth.Shift | None = None
) -> str:
    """Write synthetic raw files for `years` into `folder`; return it as a `file://` base URL."""
    folder = Path(folder).resolve()
    synth.write_files(synth.generate(years, collisions_per_year, seed=seed, shift=shift), folder)
    return folder.as_uri() + "/"


def _run(notebook: str, parameters: dict, settings: Settings, progress: bool) -> run_result.RunResult:
    result = executor.execute(notebook, parameters, settings=settings, progress=progress)
    return result.raise_for_status()


def ingest(settings: Settings, years: tuple[int, ...], base_url: str, progress: bool = True) -> run_result.RunResult:
    """01_ingest for `years` from `base_url` into LAKE_URI (years already there are left as they are)."""
    years_text = ",".join(map(str, years))
    return _run(
        "01_ingest", {"years": years_text, "base_url": base_url}, settings, progress
    )


def train(settings: Settings, plan: YearPlan, progress: bool = True, **parameters) -> run_result.RunResult:
    """02_train on the plan's years; it registers a version and promotes it if it beats the champion."""
    return _run(
        "02_train",
        {
            **plan.train_parameters(),
            "promote": True,
            **parameters,
        },
        settings,
        progress,
    )


def _last_tested(client: mlflow.MlflowClient, run_id: str) -> date | None:
    return range_end(client.get_run(run_id).data.params, TEST_RANGE_PARAM)


def baseline_versions(settings: Settings, plan: YearPlan) -> list[str]:
    """Registered versions trained on exactly the plan's split, newest first."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{settings.model_name}'")
    except MlflowException:
        return []
    wanted = f"{plan.test_year}-01-01..{plan.test_year}-12-31"  # a retraining tests on its last labelled days
    found = [v for v in versions if client.get_run(v.run_id).data.params.get(TEST_RANGE_PARAM) == wanted]
    return [v.version for v in sorted(found, key=lambda v: int(v.version), reverse=True)]


def _loads(settings: Settings, version: str) -> bool:
    """Whether this code can load the version: one saved by an older version of `lib` cannot."""
    uri = f"models:/{settings.model_name}/{version}"
    try:
        InProcessScorer(resolve_model(uri, settings.mlflow_tracking_uri), settings.mlflow_tracking_uri)
    except StaleModel as error:
        log.warning("Version %s is not reused: %s.", version, error)
        return False
    return True


def _champion(client: mlflow.MlflowClient, settings: Settings):
    try:
        return client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except MlflowException:
        return None


def ensure_baseline_champion(settings: Settings, plan: YearPlan, progress: bool = True, **train_parameters) -> str:
    """The champion version for a simulation of the plan's last year, training it if needed."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    champion = _champion(client, settings)
    if champion is not None:
        last_tested = _last_tested(client, champion.run_id)
        if last_tested is not None and last_tested < plan.simulation_start and _loads(settings, champion.version):
            log.info(
                "Champion version %s was tested on collisions up to %s, before the simulation: it is kept.",
                champion.version,
                last_tested,
            )
            return str(champion.version)
    # The newest baseline this code can load: each check loads a model, so stop at the first that does.
    version = next((v for v in baseline_versions(settings, plan) if _loads(settings, v)), None)
    if version is None:
        log.info("Training the first model: %s.", plan.describe())
        train(settings, plan, progress=progress, **train_parameters)
        version = baseline_versions(settings, plan)[0]
        champion = _champion(client, settings)
    if champion is None or str(champion.version) != version:
        # The champion was trained on days the simulation will score (a retraining of an earlier run), or
        # was saved by an older version of this code (logged by _loads).
        client.set_registered_model_alias(settings.model_name, settings.model_alias, version)
        log.info(
            "Alias %s now points at version %s, trained on %s, instead of version %s, which was tested on the "
            "simulated days or cannot be loaded by this code.",
            settings.model_alias,
            version,
            plan.train_parameters()["train_years"],
            champion.version if champion else "none",
        )
    return version
