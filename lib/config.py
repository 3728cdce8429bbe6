"""The one place that reads configuration.

Every setting comes from the environment, then `.env` (written from `.env.example` by `make setup`), then
`.env.example` itself, whose values point at the embedded services. Values are validated
here, so a typo fails at start-up with the variable's name and value, not deep in a run.

`configure()` is the one channel from the settings to every tool that reads variables of its
own: it exports the resolved settings and the variables MLflow's client and registry, boto3
and every child process (notebook kernels, the model server, JupyterLab) look up. Each
entry point and notebook calls it once instead of setting variables itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from lib.errors import NeedsAction

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
DATA_DIR = ROOT / "data"
SERVICES_DIR = DATA_DIR / "services"

# `.env.example` is the single list of variables and their local defaults; `.env` overrides it
# and the process environment overrides both.
DEFAULTS_FILE = ROOT / ".env.example"
DOTENV_FILE = ROOT / ".env"

MIN_YEAR, MAX_YEAR = 1979, 2100


class ConfigError(ValueError, NeedsAction):
    """A setting is missing or malformed; the message names the variable and the value."""


@dataclass(frozen=True)
class Settings:
    stats19_base_url: str
    stats19_years: tuple[int, ...]
    lake_uri: str
    s3_endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str
    database_url: str
    mlflow_tracking_uri: str
    model_name: str
    model_alias: str
    model_version: str | None
    model_check_seconds: float
    simulation_start_date: date
    seconds_per_day: float
    eval_scheduler_increment: float
    label_delay_days: int
    monitor_window_days: int
    reports_dir: Path
    serve_port: int
    jupyter_port: int
    notebook_timeout: float
    runs_keep_per_notebook: int

    @property
    def model_uri(self) -> str:
        """The registry URI to serve: a pinned version wins over the alias."""
        if self.model_version:
            return f"models:/{self.model_name}/{self.model_version}"
        return f"models:/{self.model_name}@{self.model_alias}"


def defaults() -> dict[str, str]:
    """The local development defaults, as documented in `.env.example`."""
    return read_dotenv(DEFAULTS_FILE)


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as python-dotenv reads them (comments, quotes, `export`); {} for a missing file."""
    if not path.exists():
        return {}
    values = dotenv_values(path)
    for key, value in values.items():
        if value is None:
            raise ConfigError(f"{path}: the line {key!r} has no value; write it as {key}=VALUE")
    return values


def parse_years(text: str, variable: str = "STATS19_YEARS") -> tuple[int, ...]:
    """`2019-2024`, `2014,2016` or a mix such as `2014-2015,2018` -> sorted unique years."""
    years: set[int] = set()
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d{4})(?:-(\d{4}))?", part)
        if not match:
            raise ConfigError(f"{variable}={text!r}: {part!r} is not a year or a range like 2019-2024")
        first, last = int(match[1]), int(match[2] or match[1])
        if first > last:
            raise ConfigError(f"{variable}={text!r}: range {part!r} runs backwards")
        if first < MIN_YEAR or last > MAX_YEAR:
            raise ConfigError(f"{variable}={text!r}: STATS19 years run from {MIN_YEAR}")
        years.update(range(first, last + 1))
    return tuple(sorted(years))


def _number(variable: str, text: str, kind: type = float, minimum: float = 0, inclusive: bool = False):
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{variable}={text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < minimum or (value == minimum and not inclusive):
        bound = "at least" if inclusive else "greater than"
        raise ConfigError(f"{variable}={text!r} must be {bound} {minimum}")
    return value


def _url(variable: str, text: str, schemes: tuple[str, ...]) -> str:
    scheme = urlparse(text).scheme
    if scheme not in schemes:
        raise ConfigError(f"{variable}={text!r} must start with one of {', '.join(s + '://' for s in schemes)}")
    return text


def load_settings(environ: dict[str, str] | None = None, dotenv: Path | None = DOTENV_FILE) -> Settings:
    """Resolve settings: `environ` (default: the process environment), then `dotenv`, then the defaults."""
    env = defaults()
    if dotenv is not None:
        env.update(read_dotenv(dotenv))
    env.update({k: v for k, v in (os.environ if environ is None else environ).items() if k in env})

    try:
        start = date.fromisoformat(env["SIMULATION_START_DATE"])
    except ValueError:
        raise ConfigError(
            f"SIMULATION_START_DATE={env['SIMULATION_START_DATE']!r} is not a date like 2024-01-01"
        ) from None
    seconds_per_day = _number("SECONDS_PER_DAY", env["SECONDS_PER_DAY"])
    increment = env["EVAL_SCHEDULER_INCREMENT"] or env["SECONDS_PER_DAY"]
    reports = Path(env["REPORTS_DIR"])

    return Settings(
        stats19_base_url=_url("STATS19_BASE_URL", env["STATS19_BASE_URL"], ("http", "https", "file")),
        stats19_years=parse_years(env["STATS19_YEARS"]),
        lake_uri=_url("LAKE_URI", env["LAKE_URI"], ("s3", "file")),
        s3_endpoint_url=_url("S3_ENDPOINT_URL", env["S3_ENDPOINT_URL"], ("http", "https")),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        database_url=_url("DATABASE_URL", env["DATABASE_URL"], ("postgresql", "postgres")),
        # A tracking server: MLflow 3 refuses `file:` stores, and monitoring reads the model's run over REST.
        mlflow_tracking_uri=_url("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"], ("http", "https")),
        model_name=env["MODEL_NAME"],
        model_alias=env["MODEL_ALIAS"],
        model_version=env["MODEL_VERSION"] or None,
        model_check_seconds=_number("MODEL_CHECK_SECONDS", env["MODEL_CHECK_SECONDS"]),
        simulation_start_date=start,
        seconds_per_day=seconds_per_day,
        eval_scheduler_increment=_number("EVAL_SCHEDULER_INCREMENT", increment),
        label_delay_days=_number("LABEL_DELAY_DAYS", env["LABEL_DELAY_DAYS"], int, inclusive=True),
        monitor_window_days=_number("MONITOR_WINDOW_DAYS", env["MONITOR_WINDOW_DAYS"], int),
        reports_dir=reports if reports.is_absolute() else ROOT / reports,
        serve_port=_number("SERVE_PORT", env["SERVE_PORT"], int),
        jupyter_port=_number("JUPYTER_PORT", env["JUPYTER_PORT"], int),
        notebook_timeout=_number("NOTEBOOK_TIMEOUT", env["NOTEBOOK_TIMEOUT"]),
        runs_keep_per_notebook=_number("RUNS_KEEP_PER_NOTEBOOK", env["RUNS_KEEP_PER_NOTEBOOK"], int),
    )


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def environment(settings: Settings) -> dict[str, str]:
    """The settings as variables, plus what MLflow's client, its registry and boto3 read for themselves.

    The registry URI is set explicitly: MLflow resolves `models:/` artifact URIs against it and,
    without it, falls back to `sqlite:///mlflow.db` in the working directory.
    """
    variables = {f.name.upper(): _text(getattr(settings, f.name)) for f in fields(settings)}  # field = variable
    variables.update(
        MLFLOW_REGISTRY_URI=settings.mlflow_tracking_uri,
        # MLflow's S3 artifact access (boto3) when a server hands out s3:// locations instead of proxying.
        MLFLOW_S3_ENDPOINT_URL=settings.s3_endpoint_url,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",  # keeps download bars out of executed notebooks
    )
    return variables


def configure(environ: dict[str, str] | None = None, dotenv: Path | None = DOTENV_FILE) -> Settings:
    """Resolve the settings once and export them to this process and every process it starts.

    MLflow's HTTP retries default to 3 unless the environment sets them: its own default holds a
    caller for minutes when the server is down, and the runner and the executor retry themselves.
    """
    settings = load_settings(environ, dotenv)
    os.environ.update(environment(settings))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    return settings
