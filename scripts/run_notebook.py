"""Execute one notebook with parameters, archive the executed copy and record the run.

    python scripts/run_notebook.py 02_train -p train_years 2014-2016 -p test_year 2018 [--timeout 600]

NOTEBOOK is a name in notebooks/ (`02_train` or `02_train.py`) or a path to a py:percent file.
Each `-p NAME VALUE` is typed like the default in the notebook's `parameters` cell: an int
default takes whole numbers, a list default takes `2014,2015` or `[2014, 2015]`, a string
default keeps the text as is (`-p train_years 2014-2016`). The executed notebook and its HTML copy are written to
REPORTS_DIR/runs/NOTEBOOK/, and the run is recorded in the notebook_runs table.

Exit codes: 0 succeeded, 1 a cell failed, 2 bad input (unknown notebook or parameter, a value
of the wrong type, bad configuration; nothing was run), 3 the database is unreachable (nothing
was run), 124 a cell ran longer than the timeout, 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import sys

from lib.config import ConfigError, configure
from lib.runner.executor import execute, handle_sigterm_as_interrupt
from lib.runner.parameters import parameters_from_text
from lib.runner.run_result import NotebookError, NotebookInterrupted
from lib.store.db import DatabaseError

EXIT_CODES = {"succeeded": 0, "failed": 1, "timed_out": 124}
EXIT_BAD_INPUT, EXIT_DATABASE, EXIT_INTERRUPTED = 2, 3, 130


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", help="notebook name in notebooks/ or path to a py:percent file")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter of the notebook's parameters cell (repeatable)",
    )
    parser.add_argument("--timeout", type=_seconds, help="seconds any one cell may run (default: NOTEBOOK_TIMEOUT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    handle_sigterm_as_interrupt()

    try:
        configure()
        parameters = parameters_from_text(args.notebook, args.parameter)
        result = execute(args.notebook, parameters, timeout=args.timeout)
    except (NotebookError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatabaseError as error:
        print(f"error: {error}; the notebook was not run", file=sys.stderr)
        return EXIT_DATABASE
    except NotebookInterrupted as interrupted:
        print(interrupted.result.describe(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted before the notebook started", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.describe(), file=sys.stdout if result.ok else sys.stderr)
    return EXIT_CODES[result.status]


if __name__ == "__main__":
    sys.exit(main())
