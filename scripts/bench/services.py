"""Time from `up` to all three embedded services healthy, cold (first start) and warm (restart).

Runs a private stack on free ports in a temporary folder, like the tests, so it never touches
the developer's own `data/services`. Usage: python scripts/bench/services.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from lib.config import load_settings
from lib.services.stack import Stack, private_variables


def timed_up(stack: Stack) -> float:
    began = time.perf_counter()
    stack.up()
    elapsed = time.perf_counter() - began
    stack.down()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings({**os.environ, **private_variables("bench")})
        stack = Stack(settings, state_dir=Path(state), embedded={"postgres", "s3", "mlflow"})
        cold = timed_up(stack)
        warm = [timed_up(stack) for _ in range(args.repeats)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"up -> all healthy, cold (initdb, new bucket): {cold:.1f} s")
    print(f"up -> all healthy, warm restart: median {statistics.median(warm):.1f} s, "
          f"max {max(warm):.1f} s over {args.repeats} runs (target: under 15 s)")


if __name__ == "__main__":
    main()
