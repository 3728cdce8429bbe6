"""The run index page: escaped, relative links where possible, every status shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from lib.run_index import render


def _run(reports: Path, **fields) -> dict:
    run = {
        "run_id": "20250301T120000Z-abcdef12",
        "notebook": "03_infer",
        "parameters": {"start_date": "2018-01-01", "end_date": "2018-01-31"},
        "status": "succeeded",
        "started_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        "duration_s": 4.25,
        "output_ipynb": str(reports / "runs" / "03_infer" / "20250301T120000Z-abcdef12.ipynb"),
        "output_html": str(reports / "runs" / "03_infer" / "20250301T120000Z-abcdef12.html"),
        "failed_cell": None,
        "error_name": None,
        "error_value": None,
        "warnings": [],
    }
    return {**run, **fields}


def test_the_index_links_relatively_and_escapes_what_the_runs_recorded(tmp_path):
    reports = tmp_path / "reports"
    elsewhere = tmp_path / "old-reports" / "run.ipynb"
    runs = [
        _run(
            reports,
            notebook="04_monitor",
            status="failed",
            failed_cell=7,
            error_name="ValueError",
            error_value="<script>alert('x')</script> & more",
            parameters={"as_of": "<b>2018</b>"},
        ),
        _run(reports, output_ipynb=str(elsewhere), output_html=None, status="running", duration_s=None),
        _run(reports),
    ]
    page = render(runs, reports, datetime(2025, 3, 2, tzinfo=UTC))

    assert "<script>" not in page and "<b>2018</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "as_of = &quot;&lt;b&gt;2018&lt;/b&gt;&quot;" in page
    assert 'href="runs/03_infer/20250301T120000Z-abcdef12.html"' in page
    assert f'href="{elsewhere.resolve().as_uri()}"' in page  # outside REPORTS_DIR: an absolute file URL
    assert "cell 7: ValueError" in page
    rows = re.findall(r"<tr><td>.*?</tr>", page)
    assert [re.findall(r'class="status"[^>]*>(\w+)<', row)[0] for row in rows] == ["failed", "running", "succeeded"]
    assert "3 run(s): 1 failed, 1 running, 1 succeeded" in page


def test_the_index_keeps_a_long_error_whole_and_shows_warnings(tmp_path):
    cause = "https://data.dft.gov.uk/x.csv: the host name did not resolve; " + "use a mirror " * 40 + "END-OF-CAUSE"
    runs = [_run(tmp_path, status="failed", error_name="HostNotFound", error_value=cause),
            _run(tmp_path, warnings=["the executed notebook was not attached to its MLflow run"])]
    page = render(runs, tmp_path, datetime(2025, 3, 2, tzinfo=UTC))
    assert "END-OF-CAUSE" in page
    assert "warning: the executed notebook was not attached to its MLflow run" in page
