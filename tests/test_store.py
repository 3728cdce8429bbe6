"""The store owns every SQL statement on the project's tables: nothing else in the package, the
notebooks or the scripts writes one, so a change to a table is a change to one folder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lib.config import ROOT
from lib.store import events, simulation_state
from lib.store.db import MIGRATIONS_DIR

SQL_VERB = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE|ALTER\s+TABLE)\b", re.IGNORECASE)


def project_tables() -> set[str]:
    """The tables the migrations create."""
    sql = "\n".join(path.read_text() for path in MIGRATIONS_DIR.glob("*.sql"))
    return set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql))


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string literals in a Python file that read like SQL on a project table."""
    tables = re.compile(rf"\b({'|'.join(sorted(project_tables()))})\b")
    tree = ast.parse(path.read_text(), filename=str(path))
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
    found = []
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        if is_text and SQL_VERB.search(node.value) and tables.search(node.value):
            found.append((node.lineno, node.value.strip().splitlines()[0]))
    return found


def test_the_migrations_create_the_tables_this_check_looks_for():
    expected = {"predictions", "monitoring_metrics", "notebook_runs", "simulation_state", "model_events"}
    assert expected <= project_tables()


def test_no_sql_on_the_project_tables_outside_the_store():
    code = [*(ROOT / "lib").rglob("*.py"), *(ROOT / "notebooks").glob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    outside = [path for path in code if (ROOT / "lib" / "store") not in path.parents]
    offenders = [f"{path.relative_to(ROOT)}:{line}: {text}" for path in outside for line, text in sql_strings(path)]
    assert not offenders, "SQL on the project's tables belongs in lib/store/:\n" + "\n".join(offenders)


def test_the_store_itself_is_found_by_the_check():
    # Guards the check above: it must recognise the statements the store does write.
    assert sql_strings(ROOT / "lib" / "store" / "predictions.py")


def test_progress_moves_only_progress_columns():
    with pytest.raises(ValueError, match="not progress columns of simulation_state: started_at"):
        simulation_state.set_progress(None, started_at="2024-01-01")


def test_a_retraining_decision_is_one_of_the_decision_events():
    with pytest.raises(ValueError, match="'promoted' is not a retraining decision"):
        events.replace_decision(None, events.PROMOTED, "m", "1", {}, None)
