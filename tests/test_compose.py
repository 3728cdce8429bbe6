"""The docker-compose deployment, checked without a Docker engine.

The compose file, the project image and the Grafana provisioning are read as data and held
against the repository: every service, variable, file, port, command and query they name must
exist and agree with the code. The PostgreSQL init script and the dashboard's SQL run for real,
against the test session's PostgreSQL. Where a Docker Compose client is installed,
`docker compose config` reads the file as Compose itself does.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import psycopg2
import psycopg2.errors
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lib.config import DEFAULTS_FILE, ROOT, Settings, load_settings, read_dotenv
from lib.monitoring.estimated_quality import estimate_quality
from lib.monitoring.label_drift import LabelCounts, compare
from lib.monitoring.monitor import store_metrics
from lib.monitoring.places import PlacePolicy, place_snapshot, store_snapshot
from lib.monitoring.retraining import RetrainingPolicy
from lib.services.postgres import SUPERUSER
from lib.services.stack import Stack, embedded_services
from lib.store import dashboard_queries as dashboard
from lib.store.db import session
from lib.store.metrics import DRIFT, DRIFT_SHARE_METRIC, ESTIMATED, LABELS, PR_AUC_METRIC, QUALITY, ROC_AUC_METRIC

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"
POSTGRES_INIT = ROOT / "docker" / "postgres" / "initdb" / "10-create-databases.sh"
CREATE_LAKE = ROOT / "docker" / "minio" / "create-lake.sh"
GRAFANA = ROOT / "docker" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "inference-db.yaml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "accident-severity.yaml"
DASHBOARD = GRAFANA / "dashboards" / "accident-severity.json"
ALERT_RULES = GRAFANA / "provisioning" / "alerting" / "ksi-quality.yaml"

ALWAYS_ON = {"minio", "create-lake", "postgres"}
# The profiles as the compose file's header and the README document them.
PROFILE_SERVICES = {
    "ingestion": ALWAYS_ON | {"ingestion"},
    "training-manual": ALWAYS_ON | {"mlflow", "jupyter"},
    "training-workflow": ALWAYS_ON | {"mlflow", "training"},
    "simulation": ALWAYS_ON | {"mlflow", "simulation", "model-server", "grafana", "adminer"},
    "all": ALWAYS_ON
    | {"mlflow", "ingestion", "training", "jupyter", "simulation", "model-server", "grafana", "adminer"},
}
# The one-shot jobs run the same entry points as the Makefile.
JOB_COMMANDS = {
    "ingestion": ["python", "scripts/run_notebook.py", "01_ingest"],
    "training": ["python", "scripts/run_notebook.py", "02_train"],
    "simulation": ["python", "scripts/simulate.py"],
}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt} and $VAR.
VARIABLE = re.compile(r"\$\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)")
CREDENTIAL = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|_USER)(_ID)?$")


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def strings(value):
    """Every string inside a parsed YAML value (keys of mappings excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def references(text: str):
    """(name, operator) of each variable Compose interpolates in `text`; `$$` is a literal dollar."""
    for match in VARIABLE.finditer(text.replace("$$", "")):
        yield (match["braced"] or match["bare"]), match["op"]


def interpolate(text: str, values: dict[str, str]) -> str:
    """`text` as Compose interpolates it; a variable Compose would refuse (`:?`, `?`) raises KeyError."""

    def substitute(match: re.Match) -> str:
        name, op, arg = (match["braced"] or match["bare"]), match["op"] or "", match["arg"] or ""
        value = values.get(name)
        is_set = value is not None and (value != "" or not op.startswith(":"))
        if op in (":-", "-"):
            return value if is_set else arg
        if op in (":+", "+"):
            return arg if is_set else ""
        if op in (":?", "?") and not is_set:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def enabled(compose: dict, profile: str) -> set[str]:
    return {
        name
        for name, service in compose["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def dependencies(service: dict) -> dict[str, dict]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: {"condition": "service_started"} for name in depends}
    return depends


def reachable(compose: dict, name: str) -> set[tuple[str, str]]:
    """(service, condition) of every required dependency of `name`, followed transitively."""
    found, todo = set(), [name]
    while todo:
        for target, spec in dependencies(compose["services"][todo.pop()]).items():
            if spec.get("required", True) and (target, spec["condition"]) not in found:
                found.add((target, spec["condition"]))
                todo.append(target)
    return found


def command_text(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else shlex.join(command)


def project_services(compose: dict) -> dict[str, dict]:
    """Services built from docker/Dockerfile."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def code_services(compose: dict) -> dict[str, dict]:
    """Project services that run the project's code (everything but the MLflow server)."""
    return {
        name: s
        for name, s in project_services(compose).items()
        if re.search(r"scripts/|lib\.|jupyter", command_text(s))
    }


def env_example() -> dict[str, str]:
    return read_dotenv(DEFAULTS_FILE)


def resolve(text: str) -> str:
    """`text` as Compose would pass it with .env copied from .env.example.

    A variable that .env.example lacks (the definitions test reports it) gets a placeholder, so the
    other checks still see the rest.
    """
    values = env_example()
    for name, _ in references(text):
        values.setdefault(name, f"placeholder-{name.lower()}")
    return interpolate(text, values)


def resolved_environment(service: dict) -> dict[str, str]:
    return {key: resolve(str(value)) for key, value in (service.get("environment") or {}).items()}


def container_ports(service: dict) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in service.get("ports", [])}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume entry."""
    return [tuple(entry.split(":")[:2]) for entry in service.get("volumes", [])]


def is_bind(source: str) -> bool:
    return source.startswith((".", "/"))


# ------------------------------------------------------------------------------------ services, profiles


@pytest.mark.parametrize("profile", PROFILE_SERVICES)
def test_each_profile_starts_the_documented_services(compose, profile):
    assert enabled(compose, profile) == PROFILE_SERVICES[profile]


@pytest.mark.parametrize("profile", PROFILE_SERVICES)
def test_every_dependency_is_met_within_the_profile(compose, profile):
    services = compose["services"]
    for name in enabled(compose, profile):
        for target, spec in dependencies(services[name]).items():
            assert target in services, f"{name} depends on {target}, which the compose file does not define"
            if spec.get("required", True):
                assert target in enabled(compose, profile), (
                    f"profile {profile}: {name} needs {target}, which the profile does not start"
                )
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy: it has no healthcheck"
                )
            if spec["condition"] == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", (
                    f"{name} waits for {target} to finish: it restarts"
                )


def test_code_never_runs_before_its_database_and_bucket_exist(compose):
    for name in project_services(compose):
        ready = reachable(compose, name)
        assert ("postgres", "service_healthy") in ready, f"{name} may start before PostgreSQL accepts connections"
        assert ("create-lake", "service_completed_successfully") in ready, f"{name} may start before the bucket exists"


# ------------------------------------------------------------------------------------------ variables


def test_every_variable_is_defined_in_env_example_or_has_a_default(compose):
    defined = env_example()
    missing = sorted(
        {
            name
            for text in strings(compose)
            for name, op in references(text)
            if op not in (":-", "-") and name not in defined
        }
    )
    assert not missing, f"docker-compose.yml uses variables that .env.example does not define: {', '.join(missing)}"


def test_credentials_have_no_defaults_and_compose_refuses_to_start_without_them(compose):
    loose = sorted(
        {
            f"{name} (used with {op or 'no operator'})"
            for text in strings(compose)
            for name, op in references(text)
            if CREDENTIAL.search(name) and op != ":?"
        }
    )
    assert not loose, f"credentials must be referenced as ${{VAR:?message}}: {', '.join(loose)}"


def test_code_services_get_every_setting_with_compose_addresses(compose):
    settings_variables = {field.name.upper() for field in dataclasses.fields(Settings)}
    for name, service in code_services(compose).items():
        environment = resolved_environment(service)
        assert settings_variables <= environment.keys(), (
            f"{name} does not pass {sorted(settings_variables - environment.keys())} from .env"
        )
        settings = load_settings(environ=environment, dotenv=None)
        assert embedded_services(settings) == set(), f"{name} would start embedded servers inside its container"
        for variable in ("DATABASE_URL", "S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
            url = urlparse(environment[variable])
            assert url.hostname in compose["services"], f"{name}: {variable} names no compose service"
            assert url.port in container_ports(compose["services"][url.hostname]), (
                f"{name}: {variable} uses port {url.port}, which {url.hostname} does not serve"
            )


def test_database_names_and_logins_agree_between_services(compose):
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    for name, service in code_services(compose).items():
        assert urlparse(resolved_environment(service)["DATABASE_URL"]).path == "/" + postgres["INFERENCE_DB"], name
    backend = next(arg for arg in services["mlflow"]["command"] if arg.startswith("--backend-store-uri="))
    assert urlparse(resolve(backend.split("=", 1)[1])).path == "/" + postgres["MLFLOW_DB"]
    grafana = services["grafana"]["environment"]
    assert grafana["GRAFANA_DB_NAME"] == postgres["INFERENCE_DB"]
    assert grafana["GRAFANA_DB_USER"] == postgres["GRAFANA_DB_USER"]
    assert grafana["GRAFANA_DB_PASSWORD"] == postgres["GRAFANA_DB_PASSWORD"]
    host, port = grafana["GRAFANA_DB_HOST"].split(":")
    assert host == "postgres" and int(port) in container_ports(services["postgres"])


def test_mlflow_accepts_the_host_names_it_is_reached_by(compose):
    from mlflow.server.security_utils import is_allowed_host_header

    command = compose["services"]["mlflow"]["command"]
    allowed = next(arg for arg in command if arg.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    hosts = {urlparse(resolved_environment(s)["MLFLOW_TRACKING_URI"]).netloc for s in code_services(compose).values()}
    for port in container_ports(compose["services"]["mlflow"]):
        hosts |= {f"localhost:{port}", f"127.0.0.1:{port}"}  # a browser on the host
    refused = sorted(host for host in hosts if not is_allowed_host_header(allowed, host))
    assert not refused, f"MLflow would answer 403 to Host {', '.join(refused)}"


def test_jupyterlab_always_asks_for_a_token(compose):
    jupyter = compose["services"]["jupyter"]
    assert jupyter["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?")
    assert not re.search(r"(token|password)=(''|\"\"|\s|$)|disable_check_xsrf", command_text(jupyter), re.I)


# -------------------------------------------------------------------------------------- files and ports


def test_build_contexts_dockerfiles_and_mounted_files_exist(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            assert (context / service["build"]["dockerfile"]).is_file(), f"{name}: no {service['build']['dockerfile']}"
        for source, target in mounts(service):
            if is_bind(source):
                assert (ROOT / source).exists(), f"{name} mounts {source} on {target}: it is not in the repository"
            else:
                assert source in compose["volumes"], f"{name} uses volume {source}, which is not declared"


def test_stateful_services_keep_their_data_in_named_volumes(compose):
    services = compose["services"]
    major = int(services["postgres"]["image"].split(":")[1].split(".")[0])
    # PostgreSQL 18+ images keep their data in /var/lib/postgresql/<major>/docker and refuse a
    # volume on the old /var/lib/postgresql/data.
    data_dirs = {
        "minio": "/data",
        "grafana": "/var/lib/grafana",
        "postgres": "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data",
    }
    for name, target in data_dirs.items():
        sources = [source for source, mounted in mounts(services[name]) if mounted == target]
        assert sources and not is_bind(sources[0]), f"{name} keeps {target} outside a named volume"


def test_published_ports_are_loopback_only_distinct_and_clear_of_the_embedded_services(compose):
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            # [[address:]host_port:]container_port[/protocol]; without an address Docker binds every interface.
            parts = str(port).split("/")[0].split(":")
            address, host_port = (parts[0] if len(parts) == 3 else "0.0.0.0"), parts[-2] if len(parts) > 1 else None
            assert address == "127.0.0.1" and host_port, f"{name} publishes {port} beyond this machine"
            assert host_port not in published, f"{name} and {published.get(host_port)} both publish port {host_port}"
            published[host_port] = name
    stack = Stack(load_settings(environ={}, dotenv=None), embedded=set())
    embedded = {port for service in stack.services for port in (service.port, *service.extra_ports)}
    embedded |= {int(env_example()[key]) for key in ("SERVE_PORT", "JUPYTER_PORT")}
    assert not {int(port) for port in published} & embedded, "compose and `make up` would fight over a port"


def test_project_commands_are_the_makefile_entry_points(compose):
    services = compose["services"]
    for name, command in JOB_COMMANDS.items():
        assert services[name]["command"] == command
    assert services["jupyter"]["command"][:2] == ["jupyter", "lab"]
    # scripts/serve.py serves on the port the container publishes.
    assert services["model-server"]["command"] == ["python", "scripts/serve.py", "--host", "0.0.0.0", "--port", "5001"]
    assert 5001 in container_ports(services["model-server"])
    makefile = (ROOT / "Makefile").read_text()
    for name, service in project_services(compose).items():
        text = command_text(service)
        for script in re.findall(r"scripts/\w+\.py", text):
            assert (ROOT / script).is_file(), f"{name} runs {script}, which does not exist"
            assert script in makefile, f"{name} runs {script}, which no Makefile target runs"
        for notebook in re.findall(r"run_notebook\.py (\w+)", text):
            assert (ROOT / "notebooks" / f"{notebook}.py").is_file(), f"{name} runs notebook {notebook}: not found"


def test_create_lake_script_derives_the_bucket_and_creates_the_project_account(tmp_path):
    calls = tmp_path / "calls"
    fake_mc = tmp_path / "bin" / "mc"
    fake_mc.parent.mkdir()
    fake_mc.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')  # the mc image cannot run here
    fake_mc.chmod(0o755)
    env = {
        "PATH": f"{fake_mc.parent}{os.pathsep}{os.environ['PATH']}",
        "MINIO_ROOT_USER": "root",
        "MINIO_ROOT_PASSWORD": "root-secret",
        "AWS_ACCESS_KEY_ID": "lake-key",
        "AWS_SECRET_ACCESS_KEY": "lake-secret",
    }

    done = subprocess.run(
        ["sh", str(CREATE_LAKE)],
        env={**env, "LAKE_URI": "s3://stats19-lake/prefix/x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert "mb --ignore-existing lake/stats19-lake" in lines
    assert "admin user add lake lake-key lake-secret" in lines
    assert "admin policy attach lake readwrite --user lake-key" in lines

    calls.unlink()
    refused = subprocess.run(
        ["sh", str(CREATE_LAKE)],
        env={**env, "LAKE_URI": "file:///tmp/lake"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "LAKE_URI=file:///tmp/lake" in refused.stderr
    assert not calls.exists()


# ---------------------------------------------------------------------------------------------- image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [
        tuple(line.strip().split(None, 1))
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_image_installs_requirements_txt_only_and_holds_what_the_code_reads():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [args for op, args in instructions if op == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.txt", run) for run in runs)
    # The package itself, editable as `make setup` installs it, so `python scripts/...` imports `lib`.
    assert any(re.search(r"pip install .*--editable \.$", run) for run in runs)
    assert "requirements-dev" not in DOCKERFILE.read_text()

    copied = set()
    for op, args in instructions:
        if op == "COPY":
            sources = [word for word in args.split() if not word.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
            copied |= {source.rstrip("/") for source in sources}
    # lib/config.py falls back to .env.example for every setting the environment leaves out.
    assert {"requirements.txt", "pyproject.toml", "lib", "scripts", "notebooks", DEFAULTS_FILE.name} <= copied
    assert [args for op, args in instructions if op == "USER"][-1] not in ("root", "0")

    ignored = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert ".env" in ignored, "the build context would carry .env and its credentials"
    assert not copied & set(ignored), f"the Dockerfile copies what .dockerignore leaves out: {copied & set(ignored)}"


def requirement_closure(path: Path) -> set[str]:
    """Distributions that `pip install -r path` brings in, read from the installed metadata."""
    todo = [
        Requirement(line.split("#")[0].strip()).name
        for line in path.read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    ]
    closure: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # not for this platform: it provides nothing here
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return closure


def test_every_module_the_image_runs_is_installed_by_requirements_txt(compose):
    closure = requirement_closure(REQUIREMENTS)
    providers = importlib.metadata.packages_distributions()
    # The image holds lib/ and scripts/ but not tests/; benchmarks are not run from it.
    run_scripts = {
        ROOT / script
        for s in project_services(compose).values()
        for script in re.findall(r"scripts/\w+\.py", command_text(s))
    }
    missing = {}
    for path in [*ROOT.glob("lib/*.py"), *ROOT.glob("notebooks/*.py"), *sorted(p for p in run_scripts if p.is_file())]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "lib":
                    continue
                if not {canonicalize_name(d) for d in providers.get(top, [])} & closure:
                    missing.setdefault(top, path.relative_to(ROOT))
    assert not missing, f"imported but not installed by requirements.txt: {missing}"


# --------------------------------------------------------------------------------------------- Grafana


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(where, SQL, format) of every query of the dashboard: panels, then annotations."""
    board = json.loads(DASHBOARD.read_text())
    queries = [
        (f"panel {panel['title']!r}", target["rawSql"], target["format"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"annotation {item['name']!r}", item["target"]["rawSql"], item["target"]["format"])
        for item in board["annotations"]["list"]
        if "target" in item
    ]
    return queries + alert_queries()


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str, str]]:
    """(where, SQL, format) of the provisioned alert rules' database queries (not their expressions)."""
    return [
        (f"alert {rule['title']!r}", query["model"]["rawSql"], query["model"]["format"])
        for rule in alert_rules()
        for query in rule["data"]
        if query["datasourceUid"] != "__expr__"
    ]


def squeeze(sql: str) -> str:
    return " ".join(sql.split())


def test_datasource_reads_its_credentials_from_the_grafana_environment(compose):
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "grafana-postgresql-datasource"
    assert "password" not in source and source["secureJsonData"]["password"].startswith("$")
    grafana_env = compose["services"]["grafana"]["environment"]
    named = {name for text in strings(source) for name, _ in references(text)}
    assert named and named <= grafana_env.keys(), f"the datasource reads {named - grafana_env.keys()}, unset in grafana"


def test_dashboard_provider_points_at_the_mounted_dashboards(compose):
    grafana = compose["services"]["grafana"]
    bound = {target: ROOT / source for source, target in mounts(grafana) if is_bind(source)}
    assert bound["/etc/grafana/provisioning"] == DATASOURCES.parent.parent
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    folder = bound.get(provider["options"]["path"])
    assert folder is not None, f"the provider reads {provider['options']['path']}, where nothing is mounted"
    assert DASHBOARD in folder.glob("*.json")
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert bound[str(home.parent)] / home.name == DASHBOARD


def test_dashboard_uses_the_provisioned_datasource_and_the_plotly_dashboards_sql():
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    board = json.loads(DASHBOARD.read_text())
    refs = [panel["datasource"] for panel in board["panels"]]
    refs += [target["datasource"] for panel in board["panels"] for target in panel["targets"]]
    refs += [item["datasource"] for item in board["annotations"]["list"] if "target" in item]
    refs += [
        {"uid": query["datasourceUid"]}
        for rule in alert_rules()
        for query in rule["data"]
        if query["datasourceUid"] != "__expr__"
    ]
    assert {ref["uid"] for ref in refs} == {uid}
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])

    grafana_sql = [squeeze(sql) for _, sql, _ in dashboard_queries()]
    module = ast.parse(Path(dashboard.__file__).read_text())
    shared = {
        target.id: getattr(dashboard, target.id)
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.endswith("_SQL")
    }
    absent = [name for name, sql in shared.items() if not any(squeeze(sql) in query for query in grafana_sql)]
    assert shared and not absent, f"Grafana shows no panel built on lib/store/dashboard_queries.py {', '.join(absent)}"


def test_drift_panel_draws_the_retraining_threshold():
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if squeeze(dashboard.DRIFT_SHARE_SQL) in squeeze(p["targets"][0]["rawSql"])]
    assert {panel["type"] for panel in panels} == {"timeseries", "stat"}  # the series and the status tile
    for panel in panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1]["value"] == RetrainingPolicy().drift_share_threshold


def test_the_quality_alert_fires_where_the_retraining_rule_would():
    policy = RetrainingPolicy()
    (rule,) = alert_rules()
    steps = {query["refId"]: query for query in rule["data"]}
    sql = squeeze(steps["A"]["model"]["rawSql"])
    assert f"avg(recent.value) - {policy.quality_fraction} * " in sql
    assert f"LIMIT {policy.quality_windows} ) recent" in sql
    assert squeeze(dashboard.WINDOW_METRICS_SQL) in sql and squeeze(dashboard.CHAMPION_SCORE_SQL) in sql
    assert f"q.metric = '{PR_AUC_METRIC}'" in sql
    assert steps["C"]["model"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [0]}
    assert rule["condition"] == "C" and steps["C"]["model"]["expression"] == "B"


# Grafana's PostgreSQL macros, expanded as Grafana expands them, over a range that holds every row.
GRAFANA_FROM, GRAFANA_TO = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
GRAFANA_MACROS = [
    (r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{GRAFANA_FROM}' AND '{GRAFANA_TO}'"),
    (r"\$__timeFrom\(\)", f"'{GRAFANA_FROM}'"),
    (r"\$__timeTo\(\)", f"'{GRAFANA_TO}'"),
]


def expand_macros(sql: str) -> str:
    for pattern, replacement in GRAFANA_MACROS:
        sql = re.sub(pattern, replacement, sql)
    assert "$" not in sql, f"a Grafana macro or variable this test does not expand yet: {sql}"
    return sql


def seed_monitoring_tables(conn) -> None:
    """A few rows in every table the dashboard reads, written as the code writes them where it can."""
    first = date(2024, 1, 1)
    with conn.cursor() as cur:
        for day in range(14):
            collision_date = first + timedelta(days=day)
            version = "1" if day < 7 else "2"
            window_start = first + timedelta(days=day // 7 * 7)
            for n in range(3):
                p_ksi = 0.1 + 0.2 * n
                cur.execute(
                    "INSERT INTO predictions (collision_index, model_version, collision_date, window_start,"
                    " window_end, p_fatal, p_serious, p_slight, p_ksi, predicted_severity, ksi_alert,"
                    " alert_threshold, latitude, longitude) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s)",
                    (
                        f"2024SYN{day:03d}{n}",
                        version,
                        collision_date,
                        window_start,
                        window_start + timedelta(days=6),
                        p_ksi / 4,
                        p_ksi * 3 / 4,
                        1 - p_ksi,
                        p_ksi,
                        3,
                        p_ksi > 0.3,
                        0.3,
                        51.5 + 0.01 * n,
                        -0.1 + 0.01 * day,
                    ),
                )
        cur.execute(
            "INSERT INTO model_events (event, model_name, model_version, details, simulated_date)"
            " VALUES ('promoted', 'accident_severity', '2', %s, %s)",
            (
                json.dumps({"primary_metric": "ksi_pr_auc", "score": 0.6}),
                first + timedelta(days=7),
            ),
        )
        cur.execute(
            "INSERT INTO notebook_runs (run_id, notebook, parameters, status, started_at, finished_at, duration_s,"
            " failed_cell, error_name, error_value) VALUES"
            " ('run-1', '03_infer', '{}', 'succeeded', now(), now(), 1.5, NULL, NULL, NULL),"
            " ('run-2', '04_monitor', '{}', 'failed', now(), now(), 0.5, 3, 'ValueError', 'bad value')"
        )
        cur.execute(
            "INSERT INTO model_events (event, model_name, model_version, details, simulated_date) VALUES"
            " ('retrained', 'accident_severity', '2', %s, %s),"
            " ('retraining_not_needed', 'accident_severity', '2', %s, %s)",
            (
                json.dumps({"champion_before": "1", "champion_after": "2"}),
                first + timedelta(days=6),
                json.dumps({"reasons": []}),
                first + timedelta(days=13),
            ),
        )
        cur.execute(
            "INSERT INTO simulation_state (name, started_at, start_date, seconds_per_day, last_inferred_date)"
            " VALUES ('default', now() - interval '20 seconds', %s, 1, %s)",
            (first, first + timedelta(days=13)),
        )
    for week, version in ((0, "1"), (1, "2")):
        start = first + timedelta(days=7 * week)
        end = start + timedelta(days=6)
        drift = {
            DRIFT_SHARE_METRIC: 0.25,
            "drift.p_ksi_score": 0.04,
            "drift.predicted_class_score": 0.02,
            "drift.predicted_share.fatal": 0.01,
            "drift.predicted_share.serious": 0.3,
            "drift.feature_score.speed_limit": 0.12,
        }
        store_metrics(conn, start, end, version, DRIFT, drift, end)
        store_metrics(conn, start, end, version, ESTIMATED, estimate_quality([0.1, 0.3, 0.5] * 7, 0.3).metrics(), end)
        quality = {
            ROC_AUC_METRIC: 0.71,
            PR_AUC_METRIC: 0.43,
            "quality.ksi_brier": 0.16,
            "quality.recall_serious": 0.5,
            "quality.actual_share.fatal": 0.02,
            "quality.actual_share.serious": 0.25,
        }
        store_metrics(conn, start, end, version, QUALITY, quality, end + timedelta(days=30))
        labels = compare(
            LabelCounts({"injury_based": (60, 18), "severity_reporting": (40, 6)}, {"1": (100, 24)}, 100, 26.0),
            LabelCounts({"injury_based": (40, 11), "severity_reporting": (60, 9)}, {"1": (100, 20)}, 100, 25.0),
        )
        store_metrics(conn, start, end, version, LABELS, labels.metrics(), end + timedelta(days=30))
    # Observed against expected by place for the first week's collisions, once its labels arrived.
    labelled = pd.DataFrame({
        "ksi": [1, 0, 0, 1, 0, 0], "p_ksi": [0.1, 0.3, 0.5, 0.1, 0.3, 0.5],
        "latitude": [51.5, 51.51, 51.52, 51.5, 51.51, 51.52], "longitude": -0.1,
        "local_authority_highway": ["E09000031", "E09000031", "E09000031", "E09000026", "E09000026", None],
    })  # fmt: skip
    week = (first, first + timedelta(days=6), "1")
    store_snapshot(conn, place_snapshot(labelled, [week], first + timedelta(days=36), PlacePolicy()))


def test_postgres_init_creates_both_databases_and_every_dashboard_query_runs_read_only(stack):
    postgres = next(service for service in stack.services if service.name == "postgres")
    server = urlparse(postgres.url)
    # The compose init script runs as the container's superuser: here, the embedded cluster's.
    superuser = f"{SUPERUSER}:{postgres.superuser_password_file.read_text().strip()}"
    suffix = os.urandom(4).hex()
    names = {
        "INFERENCE_DB": f"compose_inference_{suffix}",
        "MLFLOW_DB": f"compose_mlflow_{suffix}",
        "GRAFANA_DB_USER": f"compose_grafana_{suffix}",
        "GRAFANA_DB_PASSWORD": "reader-" + suffix,
    }
    done = subprocess.run(
        ["bash", str(POSTGRES_INIT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{postgres.bin}{os.pathsep}{os.environ['PATH']}",
            "PGHOST": server.hostname,
            "PGPORT": str(server.port),
            "POSTGRES_USER": SUPERUSER,
            "PGPASSWORD": superuser.split(":", 1)[1],
            **names,
        },
    )
    assert done.returncode == 0, done.stderr

    base = f"postgresql://{{user}}@{server.hostname}:{server.port}/{{database}}"
    psycopg2.connect(base.format(user=superuser, database=names["MLFLOW_DB"])).close()
    # The code migrates and writes as the owner, after the init script ran: the reader still sees it all.
    with session(base.format(user=superuser, database=names["INFERENCE_DB"])) as conn:
        seed_monitoring_tables(conn)

    reader = psycopg2.connect(
        base.format(user=f"{names['GRAFANA_DB_USER']}:{names['GRAFANA_DB_PASSWORD']}", database=names["INFERENCE_DB"])
    )
    try:
        for where, sql, fmt in dashboard_queries():
            with reader, reader.cursor() as cur:
                cur.execute(expand_macros(sql))
                rows = cur.fetchall()
                columns = [column.name for column in cur.description]
            assert rows, f"{where} finds no rows in tables that hold some"
            if fmt == "time_series" or where.startswith("annotation"):
                assert columns[0] == "time" and isinstance(rows[0][0], datetime), f"{where} has no time column"
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), reader, reader.cursor() as cur:
            cur.execute("DELETE FROM predictions")
    finally:
        reader.close()


# ------------------------------------------------------------------------------------- Docker Compose


def test_docker_compose_accepts_the_file_in_every_profile(compose, tmp_path):
    probe = (
        subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if shutil.which("docker")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("no Docker Compose v2 client here (`docker compose version` fails); this check runs where it is")
    env_file = tmp_path / ".env"
    shutil.copy(DEFAULTS_FILE, env_file)
    interpolated = {name for text in strings(compose) for name, _ in references(text)}
    environment = {key: value for key, value in os.environ.items() if key not in interpolated}
    for profile in PROFILE_SERVICES:
        checked = subprocess.run(
            [
                "docker",
                "compose",
                "--project-directory",
                str(ROOT),
                "--env-file",
                str(env_file),
                "-f",
                str(COMPOSE_FILE),
                "--profile",
                profile,
                "config",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
        )
        assert checked.returncode == 0, f"profile {profile}: {checked.stderr}"
