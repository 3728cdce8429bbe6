"""Finding a notebook, reading it as jupytext does, and checking and typing its parameters.

The defaults live in the notebook's cell tagged `parameters` (papermill's convention). A caller's
parameters are checked against them before any kernel starts: an unknown name or a value that does
not fit the default's type raises `ParameterError`, naming the notebook, the parameter and the value.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import nbformat

from lib.config import NOTEBOOKS_DIR
from lib.runner.kernels import KERNEL_NAME
from lib.runner.run_result import NotebookError

PARAMETERS_TAG = "parameters"


INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds after `parameters`


class NotebookNotFound(NotebookError):
    """The notebook name or path does not point at a notebook; the message lists the known ones."""


class ParameterError(NotebookError):
    """A parameter is unknown or its value does not fit the default's type; nothing was run."""


def resolve_notebook(notebook: str | Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """`02_train`, `02_train.py` (both in `notebooks_dir`) or a path to a notebook file."""
    candidates = [Path(notebook)]
    name = Path(notebook).name
    if Path(notebook).parent == Path("."):
        candidates.append(notebooks_dir / (name if Path(name).suffix else f"{name}.py"))
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix in (".py", ".ipynb"):
            return candidate.resolve()
    known = ", ".join(path.stem for path in sorted(notebooks_dir.glob("*.py"))) or "none"
    raise NotebookNotFound(
        f"notebook {str(notebook)!r} not found: it is neither a .py/.ipynb file nor a notebook in "
        f"{notebooks_dir} (known: {known})"
    )


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook as jupytext reads it, set to run on this interpreter's ipykernel."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    return next((cell for cell in nb.cells if PARAMETERS_TAG in cell.metadata.get("tags", [])), None)


def _defaults(nb: nbformat.NotebookNode, path: Path) -> dict:
    """Names and literal defaults assigned at the top level of the parameters cell."""
    cell = _parameters_cell(nb)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as error:
        raise NotebookError(f"{path}: the parameters cell is not valid Python: {error}") from None
    defaults = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            defaults[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError):
            # Papermill injects literals, so a default must be one for overrides to make sense.
            raise NotebookError(
                f"{path}: the default of parameter {target.id!r} is `{ast.unparse(value)}`; parameters "
                "cells hold literals only (numbers, strings, lists, dicts, True/False/None)"
            ) from None
    return defaults


def parameters_of(notebook: str | Path) -> dict:
    """The defaults of the notebook's parameters cell ({} when it has none)."""
    path = resolve_notebook(notebook)
    return _defaults(read_notebook(path), path)


def _known(defaults: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in defaults.items()) or "none"


def _fits(value, default) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _check_names(path: Path, nb: nbformat.NotebookNode, parameters: dict) -> dict:
    """Raise ParameterError for parameters the notebook does not declare; return its defaults."""
    if parameters and _parameters_cell(nb) is None:
        raise ParameterError(
            f"{path.name} has no cell tagged 'parameters', so it takes no parameters; got {', '.join(parameters)}"
        )
    defaults = _defaults(nb, path)
    for name, value in parameters.items():
        if name not in defaults:
            raise ParameterError(
                f"{path.name} has no parameter {name!r} (given value {value!r}); its parameters are: {_known(defaults)}"
            )
    return defaults


def check_parameters(path: Path, nb: nbformat.NotebookNode, parameters: dict) -> dict:
    """Validate names and types against the defaults; return the defaults updated with `parameters`."""
    defaults = _check_names(path, nb, parameters)
    for name, value in parameters.items():
        if not _fits(value, defaults[name]):
            raise ParameterError(
                f"{path.name}: parameter {name!r} expects {type(defaults[name]).__name__} like its default "
                f"{defaults[name]!r}, got {type(value).__name__} {value!r}; its parameters are: {_known(defaults)}"
            )
    return {**defaults, **parameters}


def _literal(text: str):
    """JSON or a Python literal; anything else stays the text itself (papermill's leniency)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _typed(text: str, default):
    """Parse command-line text to the type of `default`; raise ValueError with the expected form."""
    if default is None:
        return _literal(text)
    if isinstance(default, bool):
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise ValueError("true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if isinstance(default, str):
        return text
    if isinstance(default, list):
        kinds = {type(item) for item in default}
        item_default = default[0] if len(kinds) == 1 else None
        try:
            if not text.strip().startswith("["):
                return [_typed(item.strip(), item_default) for item in text.split(",") if item.strip()]
            value = _literal(text)
            if isinstance(value, list):
                return value
        except ValueError:
            pass
        example = ",".join(map(str, default)) or "a,b"
        raise ValueError(f"a list such as {example} or [{example.replace(',', ', ')}]")
    value = _literal(text)
    if isinstance(value, type(default)):
        return value
    raise ValueError(f"a {type(default).__name__} literal")


def parameters_from_text(notebook: str | Path, pairs: list[tuple[str, str]]) -> dict:
    """Command-line `-p name value` pairs typed against the notebook's defaults.

    A value becomes the type of its default: `-p years 2014,2015` gives [2014, 2015] when the
    default is a list of ints, `-p name 2019` stays "2019" when the default is a string, and a
    parameter whose default is None takes JSON or a Python literal (else the text).
    """
    path = resolve_notebook(notebook)
    nb = read_notebook(path)
    raw = dict(pairs)
    defaults = _check_names(path, nb, raw)
    typed = {}
    for name, text in raw.items():
        try:
            typed[name] = _typed(text, defaults[name])
        except ValueError as expected:
            raise ParameterError(
                f"{path.name}: parameter {name!r} expects {expected} (default {defaults[name]!r}), "
                f"got {text!r}; its parameters are: {_known(defaults)}"
            ) from None
    return typed
