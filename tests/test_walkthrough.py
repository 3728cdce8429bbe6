"""The README's commands, run as a user types them: through `make`, in a fresh copy of the checkout,
from a plain shell whose environment holds only PATH, HOME and LANG.

Nothing here exports a setting on the product's behalf: the copy's `.env` moves the embedded services
to free ports and points ingestion at the shared Waltham Forest mirror, which is what the README's
Configuration section tells a user to edit. The copy gets a `.venv` of its own that reuses this
checkout's installed packages (installing from scratch is what `.ci/run` itself does just before) but,
as `make setup`'s editable install in a fresh clone would, imports the copy's own `lib`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import psycopg2
import pytest
import requests

from lib.config import ROOT, load_settings
from lib.services.object_store import ObjectStore
from lib.services.service import free_port_block

pytestmark = pytest.mark.slow

SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


def plain_environment(home: Path) -> dict[str, str]:
    """What a user's shell holds: no settings, no project venv on PATH."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "/.venv/" not in p + "/")
    return {"PATH": path or os.defpath, "HOME": str(home), "LANG": "C.UTF-8"}


def fresh_copy(destination: Path) -> Path:
    """The checkout as git sees it (tracked and new files, nothing ignored), timestamps kept."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    venv_for(destination)
    return destination


def venv_for(clone: Path) -> None:
    """A venv in the copy with this checkout's packages, whose `lib` is the copy's: the two `.pth` lines
    are what an editable install of the copy would add. Console scripts run on the copy's interpreter."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "checkout-packages.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{clone}\n")
    for tool in (ROOT / ".venv" / "bin").iterdir():
        target = venv / "bin" / tool.name
        if target.exists() or tool.is_dir() or tool.name.startswith(("python", "activate", "Activate", "pip")):
            continue
        head = tool.read_bytes()[:200]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            body = tool.read_text().split("\n", 1)[1]
            target.write_text(f"#!{python}\n{body}")
            target.chmod(0o755)
        else:
            target.symlink_to(tool.resolve())
    for data in ("share", "etc"):  # JupyterLab's assets and settings live under sys.prefix
        if (ROOT / ".venv" / data).is_dir():
            (venv / data).symlink_to(ROOT / ".venv" / data)
    (venv / ".installed").touch()  # the Makefile's stamp: installed, newer than the requirements


def readme_walkthrough() -> tuple[dict[str, str], list[list[str]]]:
    """The README's Step by step: the `.env` lines it tells a user to set, and its commands."""
    section = ROOT.joinpath("README.md").read_text().split("### Step by step", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```bash\n")[1:]]
    assert len(blocks) == 2, "the Step by step section holds a block of .env lines, then one of commands"
    settings = dict(line.split("=", 1) for line in blocks[0].splitlines() if "=" in line)
    commands = [shlex.split(line, comments=True) for line in blocks[1].splitlines() if line.strip()]
    return settings, commands


def user_dotenv(dotenv: Path, readme_settings: dict[str, str], mirror: Path) -> dict[str, str]:
    """The README's `.env` lines with the mirror's real path, and the services moved to free ports.

    The database keeps the role and the password `make setup` generated; only its port moves.
    """
    database = urlparse(load_settings({}, dotenv=dotenv).database_url)
    return {
        **readme_settings,
        "STATS19_BASE_URL": mirror.as_uri() + "/",
        "DATABASE_URL": database._replace(netloc=database.netloc.rsplit(":", 1)[0] + f":{free_port_block()}").geturl(),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port_block(ObjectStore.PORTS, ObjectStore.GRPC_OFFSET)}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port_block()}",
        "SERVE_PORT": str(free_port_block()),
        "JUPYTER_PORT": str(free_port_block()),
    }


def edit_dotenv(clone: Path, edits: dict[str, str]) -> None:
    """Change lines of `.env` in place, as a user does in an editor (its mode stays)."""
    lines = []
    for line in (clone / ".env").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={edits[key]}" if "=" in line and key in edits else line)
    (clone / ".env").write_text("\n".join(lines) + "\n")


class User:
    """Runs `make` targets in the copy with the plain environment, keeping each command's output."""

    def __init__(self, clone: Path, env: dict[str, str]):
        self.clone, self.env = clone, env

    def make(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        done = subprocess.run(["make", *args], cwd=self.clone, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"make {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["make", *args], cwd=self.clone, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read_until(process: subprocess.Popen, pattern: str, timeout: float) -> tuple[re.Match, str]:
    """Read the process's output until a line matches; fail with everything it printed otherwise."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            # Keep reading in the background, so a chatty server never blocks on a full pipe.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return match, "".join(seen)
    raise AssertionError(f"no line matched {pattern!r} within {timeout:g} s; output:\n{''.join(seen)}")


def stop(process: subprocess.Popen) -> int:
    """Ctrl-C, as a user stops `make serve` or `make training-manual`."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def readme_request() -> dict:
    """The JSON body of the README's Serving example."""
    serving = ROOT.joinpath("README.md").read_text().split("## Serving", 1)[1]
    return json.loads(serving.split("```json", 1)[1].split("```", 1)[0])


def processes_in(folder: Path) -> list[str]:
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except psutil.Error:
            continue
        if str(folder) in text:
            left.append(f"{proc.info['pid']}: {text[:200]}")
    return left


@pytest.fixture
def user(tmp_path, mirror):
    clone = fresh_copy(tmp_path / "accident-severity-forecast")
    (tmp_path / "home").mkdir()
    user = User(clone, plain_environment(tmp_path / "home"))
    user.make("setup")
    assert stat.S_IMODE((clone / ".env").stat().st_mode) == 0o600
    edit_dotenv(clone, user_dotenv(clone / ".env", readme_walkthrough()[0], mirror))
    yield user
    subprocess.run(["make", "down"], cwd=clone, env=user.env, capture_output=True, timeout=120)


def test_every_script_prints_its_help_and_exits_0_without_side_effects(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    env = plain_environment(tmp_path / "home")
    python = ROOT / ".venv" / "bin" / "python"
    before = sorted(p.name for p in ROOT.iterdir())
    for script in SCRIPTS:
        done = subprocess.run([str(python), str(script), "--help"], cwd=tmp_path / "cwd", env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{script.name} --help exited {done.returncode}: {done.stderr}"
        assert done.stdout.startswith("usage:"), f"{script.name} --help printed:\n{done.stdout[:500]}"
    assert sorted(p.name for p in ROOT.iterdir()) == before
    assert not list((tmp_path / "cwd").iterdir())


def test_the_readme_commands_work_from_a_plain_shell(user):
    """Each command of the README's Step by step exits 0; what it promises is then checked from outside."""
    clone = user.clone
    settings = load_settings({}, dotenv=clone / ".env")
    _, commands = readme_walkthrough()
    assert [c[1] for c in commands] == ["up", "ingestion", "training-workflow", "run-notebook", "run-notebook",
                                        "run-notebook", "serve", "training-manual", "simulation", "status", "down"]
    checks = {"training-workflow": champion_has_its_notebook, "serve": serve_answers_the_readme_request,
              "training-manual": jupyterlab_wants_its_token, "status": all_healthy, "down": nothing_left_running}
    for command in commands:
        assert command[0] == "make"
        target = command[1]
        if target in ("serve", "training-manual"):
            checks[target](user, settings, command[1:])
            continue
        done = user.make(*command[1:])
        if target in checks:
            checks[target](user, settings, done)
        if command[1:3] == ["run-notebook", "NB=04_monitor"]:
            january_is_monitored(user, settings, labelled="as_of 2018-03-02" in command[3])
        if command[1:3] == ["run-notebook", "NB=03_infer"]:
            with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM predictions WHERE collision_date BETWEEN '2018-01-01' AND "
                            "'2018-01-31'")
                assert cur.fetchone()[0] > 0
            conn.close()
    assert [p for p in clone.rglob("mlflow.db") if "services" not in p.parts] == []


def january_is_monitored(user: User, settings, labelled: bool) -> None:
    """Before its labels: drift and estimated quality; once they are in: realised quality, the KSI share by
    reporting regime and observed against expected by place, each on the dashboard."""
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT split_part(metric, '.', 1) FROM monitoring_metrics WHERE window_start = "
                    "'2018-01-01' AND window_end = '2018-01-31'")
        families = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT count(*) FROM place_risk WHERE known_at = '2018-03-02'")
        places = cur.fetchone()[0]
    conn.close()
    dashboard = (user.clone / "reports" / "dashboard.html").read_text()
    assert "KSI quality per window: estimated (dashed) until its labels arrive" in dashboard
    if not labelled:
        assert families == {"drift", "estimated"} and places == 0, (families, places)
        return
    assert families == {"drift", "estimated", "quality", "labels"} and places > 0, (families, places)
    assert "KSI share per window: predicted against actual (label drift)" in dashboard
    assert "Observed against expected KSI collisions, by place" in dashboard


def champion_has_its_notebook(user: User, settings, done) -> None:
    server = settings.mlflow_tracking_uri
    champion = requests.get(f"{server}/api/2.0/mlflow/registered-models/alias",
                            params={"name": settings.model_name, "alias": "champion"}, timeout=10)
    assert champion.status_code == 200, champion.text
    run_id = champion.json()["model_version"]["run_id"]
    attached = requests.get(f"{server}/api/2.0/mlflow/artifacts/list",
                            params={"run_id": run_id, "path": "notebook"}, timeout=10).json()
    assert {Path(f["path"]).suffix for f in attached.get("files", [])} == {".ipynb", ".html"}, attached
    evidence = requests.get(f"{server}/api/2.0/mlflow/artifacts/list",
                            params={"run_id": run_id, "path": "promotion"}, timeout=10).json()
    assert {Path(f["path"]).name for f in evidence.get("files", [])} == {"evidence.json", "evidence.md"}, evidence
    assert "### Promotion evidence" in champion.json()["model_version"]["description"]


def serve_answers_the_readme_request(user: User, settings, args: list[str]) -> None:
    server = user.start(*args)
    try:
        match, _ = read_until(server, r"Serving .* at (http://\S+)/invocations; it follows models:/\S+@champion",
                              timeout=240)
        url = match[1]
        answer = requests.post(f"{url}/invocations", json=readme_request(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()["predictions"][0]) >= {"p_ksi", "predicted_severity", "ksi_alert"}
        bad = requests.post(f"{url}/invocations", json={"dataframe_records": [{"speed_limit": "fast"}]}, timeout=30)
        assert bad.status_code == 400, bad.text
    finally:
        stop(server)


def jupyterlab_wants_its_token(user: User, settings, args: list[str]) -> None:
    lab = user.start(*args)
    try:
        match, printed = read_until(lab, r"JupyterLab: (http://\S+/lab)\?token=(\S+)", timeout=120)
        base, token = match[1].removesuffix("/lab"), match[2]
        deadline = time.monotonic() + 90
        while True:
            try:
                with_token = requests.get(f"{base}/api/contents", params={"token": token}, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"JupyterLab never answered at {base}:\n{printed}"
                time.sleep(0.5)
        assert with_token.status_code == 200, with_token.text
        assert "02_train.py" in {item["name"] for item in with_token.json()["content"]}
        assert requests.get(f"{base}/api/contents", timeout=5).status_code == 403
        command_lines = [" ".join(p.cmdline()) for p in psutil.Process(lab.pid).children(recursive=True)]
        assert not [line for line in command_lines if token in line]
    finally:
        stop(lab)


def all_healthy(user: User, settings, done) -> None:
    assert done.stdout.count("healthy") == 3 and "NOT healthy" not in done.stdout, done.stdout


def nothing_left_running(user: User, settings, done) -> None:
    assert processes_in(user.clone) == []
