import os
import subprocess
import sys
from datetime import date

import pytest

from lib.config import ConfigError, configure, environment, load_settings, parse_years, read_dotenv


def test_years_accept_ranges_lists_and_mixes():
    assert parse_years("2019-2021") == (2019, 2020, 2021)
    assert parse_years("2016, 2014") == (2014, 2016)
    assert parse_years("2014-2015,2018") == (2014, 2015, 2018)


@pytest.mark.parametrize("text", ["2019-20x", "19-24", "2024-2019", "", "1900"])
def test_malformed_years_name_the_variable_and_value(text):
    with pytest.raises(ConfigError, match="STATS19_YEARS") as error:
        load_settings({"STATS19_YEARS": text}, dotenv=None)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("value", ["fast", "0", "-3"])
def test_malformed_seconds_per_day_is_rejected(value):
    with pytest.raises(ConfigError, match=f"SECONDS_PER_DAY='{value}'"):
        load_settings({"SECONDS_PER_DAY": value})


def test_environment_wins_over_dotenv_which_wins_over_example(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# local\nMODEL_NAME=from_dotenv\nLABEL_DELAY_DAYS='5'\n")
    settings = load_settings({"MODEL_NAME": "from_env"}, dotenv=dotenv)
    assert settings.model_name == "from_env"
    assert settings.label_delay_days == 5
    assert settings.simulation_start_date == date(2024, 1, 1)


def test_scheduler_increment_defaults_to_seconds_per_day():
    assert load_settings({"SECONDS_PER_DAY": "2.5"}).eval_scheduler_increment == 2.5
    assert load_settings({"SECONDS_PER_DAY": "2.5", "EVAL_SCHEDULER_INCREMENT": "7"}).eval_scheduler_increment == 7


def test_pinned_model_version_wins_over_alias():
    assert load_settings({}).model_uri == "models:/accident_severity@champion"
    assert load_settings({"MODEL_VERSION": "3"}).model_uri == "models:/accident_severity/3"


@pytest.mark.parametrize(("variable", "value"), [
    ("LAKE_URI", "bucket-without-scheme"), ("DATABASE_URL", "mysql://x"), ("SIMULATION_START_DATE", "01/01/2024"),
    ("MONITOR_WINDOW_DAYS", "0"), ("LABEL_DELAY_DAYS", "-1"), ("MLFLOW_TRACKING_URI", "file:///tmp/mlruns"),
])
def test_other_malformed_values_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})


def test_dotenv_line_without_equals_is_an_error(tmp_path):
    bad = tmp_path / ".env"
    bad.write_text("JUST_A_WORD\n")
    with pytest.raises(ConfigError, match=r"\.env: the line 'JUST_A_WORD' has no value"):
        read_dotenv(bad)


@pytest.fixture
def restored_environment():
    """configure() exports into this process: put the test session's environment back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_configure_exports_the_settings_and_the_registry_to_child_processes(tmp_path, restored_environment):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MLFLOW_TRACKING_URI=http://127.0.0.1:25999\nDATABASE_URL=postgresql://u@127.0.0.1:25998/x\n")
    settings = configure({}, dotenv=dotenv)
    child = subprocess.run(
        [sys.executable, "-c", "import mlflow, os; print(mlflow.get_registry_uri(), os.environ['DATABASE_URL'])"],
        capture_output=True, text=True, check=True,
    )
    assert child.stdout.split() == ["http://127.0.0.1:25999", "postgresql://u@127.0.0.1:25998/x"]
    assert load_settings(environment(settings), dotenv=None) == settings
