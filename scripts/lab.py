"""Start JupyterLab on the notebooks folder, with a login token, for training by hand.

The token is JUPYTER_TOKEN when set, otherwise a fresh random one; it is printed with the URL,
next to the MLflow UI address. Usage: python scripts/lab.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.config import NOTEBOOKS_DIR, load_settings  # noqa: E402


def main() -> None:
    settings = load_settings()
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{settings.jupyter_port}/lab?token={token}"
    print(f"JupyterLab: {url}")
    print(f"MLflow UI:  {settings.mlflow_tracking_uri}")
    print("Open notebooks/02_train.ipynb (made by `make notebooks`; edits sync back to 02_train.py). Ctrl-C stops.")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # notebooks import `lib` as they do when run headless
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    os.execve(jupyter, [jupyter, "lab", f"--notebook-dir={NOTEBOOKS_DIR}", "--ip=127.0.0.1",
                        f"--port={settings.jupyter_port}", "--no-browser", f"--IdentityProvider.token={token}",
                        "--ServerApp.port_retries=0"], env)


if __name__ == "__main__":
    main()
