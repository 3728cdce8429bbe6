"""lib.data.curated: the window type that 03_infer, 04_monitor and the runner share.

`build_curated` is tested in tests/test_features.py, `read_window` in tests/test_inference.py.
"""

from __future__ import annotations

from datetime import date

import pytest

from lib.data.curated import Window


def test_a_window_from_named_parameters_names_them_in_its_errors():
    window = Window.from_parameters(window_start="2024-03-04", window_end=date(2024, 3, 10))
    assert window == Window(date(2024, 3, 4), date(2024, 3, 10)) == Window.parse("2024-03-04", "2024-03-10")
    assert str(window) == "2024-03-04..2024-03-10"
    with pytest.raises(ValueError, match="window_end 2024-03-01 is before window_start 2024-03-04"):
        Window.from_parameters(window_start="2024-03-04", window_end="2024-03-01")
    with pytest.raises(ValueError, match="window_start='' is not an ISO date"):
        Window.from_parameters(window_start="", window_end="2024-03-10")
    with pytest.raises(ValueError, match="window_end='2024-02-30' is not an ISO date"):
        Window.from_parameters(window_start="2024-02-01", window_end="2024-02-30")
    with pytest.raises(TypeError, match="two parameters"):
        Window.from_parameters(window_start="2024-03-04")
