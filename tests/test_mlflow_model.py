"""Loading a logged model: one saved by an older version of this code says so, instead of a bare
unpickling error, so that a user (and the demo, which then trains anew) knows what to do."""

from __future__ import annotations

import importlib
import sys

import mlflow
import pytest

from lib.errors import NeedsAction
from lib.modeling.mlflow_model import StaleModel, load_pyfunc

WRAPPER = """
import mlflow


class Wrapper(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input
"""


def test_a_model_whose_class_has_moved_is_a_stale_model_that_needs_action(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    module = code / "asf_moving_module.py"
    module.write_text(WRAPPER)
    monkeypatch.syspath_prepend(str(code))
    wrapper = importlib.import_module("asf_moving_module").Wrapper
    mlflow.pyfunc.save_model(str(tmp_path / "model"), python_model=wrapper())
    assert load_pyfunc(str(tmp_path / "model")) is not None  # loads while the class is where it was saved

    module.write_text("# the class moved elsewhere\n")
    sys.modules.pop("asf_moving_module")
    importlib.invalidate_caches()
    with pytest.raises(StaleModel, match="saved by an older version of this code.*make training-workflow") as raised:
        load_pyfunc(str(tmp_path / "model"))
    assert isinstance(raised.value, NeedsAction)
