"""Start JupyterLab on the notebooks folder, with a login token, for training by hand.

    python scripts/lab.py        # what `make training-manual` runs; Ctrl-C stops it

The token is JUPYTER_TOKEN when set, otherwise a fresh random one; it is printed with the URL,
next to the MLflow UI address. JupyterLab reads it from its environment, so it never shows on a
command line (`ps`). The notebooks' kernels inherit the project's settings (lib.config.configure).
Run as root (CI, containers), JupyterLab is told to allow it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from pathlib import Path

from lib.config import NOTEBOOKS_DIR, ConfigError, configure


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        settings = configure()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_urlsafe(24)
    print(f"JupyterLab: http://127.0.0.1:{settings.jupyter_port}/lab?token={token}")
    print(f"MLflow UI:  {settings.mlflow_tracking_uri}")
    print("Open notebooks/02_train.ipynb (made by `make notebooks`; edits sync back to 02_train.py). Ctrl-C stops.",
          flush=True)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    command = [jupyter, "lab", f"--notebook-dir={NOTEBOOKS_DIR}", "--ip=127.0.0.1", f"--port={settings.jupyter_port}",
               "--no-browser", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    os.execve(jupyter, command, env)


if __name__ == "__main__":
    sys.exit(main())
