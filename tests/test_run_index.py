"""The run index page: escaped, relative links where possible, every status shown."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path

from lib.runner.run_index import render


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
    for run in runs:
        for output in (run["output_ipynb"], run["output_html"]):
            if output:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                Path(output).write_text("{}")
    pruned = _run(reports, run_id="20250201T120000Z-0123abcd", output_html=str(reports / "runs" / "gone.html"))
    page = render([*runs, pruned], reports, datetime(2025, 3, 2, tzinfo=UTC))

    assert "<script>alert" not in page and "<b>2018</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "as_of = &quot;&lt;b&gt;2018&lt;/b&gt;&quot;</summary>" in page  # folded, its summary escaped too
    assert 'href="runs/03_infer/20250301T120000Z-abcdef12.html"' in page
    assert f'href="{elsewhere.resolve().as_uri()}"' in page  # outside REPORTS_DIR: an absolute file URL
    assert "cell 7: ValueError" in page
    rows = re.findall(r"<tr data-notebook=.*?</tr>", page)
    assert [re.findall(r'class="status"[^>]*>(\w+)<', row)[0] for row in rows][:3] == ["failed", "running", "succeeded"]
    assert '<span class="pruned"' in rows[3] and 'gone.html"' not in rows[3].split("title=")[0]  # no dead link
    # Rows carry what the filters match on, and the filters offer what the runs hold.
    assert [re.match(r'<tr data-notebook="(\w+)" data-status="(\w+)"', row).groups() for row in rows[:3]] == [
        ("04_monitor", "failed"),
        ("03_infer", "running"),
        ("03_infer", "succeeded"),
    ]
    notebook_filter = re.search(r'<select id="notebook-filter".*?</select>', page).group(0)
    assert re.findall(r'<option value="(\w*)">', notebook_filter) == ["", "03_infer", "04_monitor"]
    assert "4 run(s): 1 failed, 1 running, 2 succeeded" in page


def test_long_parameters_fold_behind_a_one_line_summary(tmp_path):
    reports = tmp_path / "reports"
    parameters = {"database_url": "postgresql://postgres@127.0.0.1:15432/accident_severity", "window_end": "2024-01-07"}
    page = render([_run(reports, parameters=parameters)], reports, datetime(2025, 3, 2, tzinfo=UTC))
    folded = re.search(r"<details><summary>(.*?)</summary>(.*?)</details>", page)
    assert folded.group(1).endswith("…") and len(html.unescape(folded.group(1))) == 60
    assert folded.group(2).split("<br>") == [
        "database_url = &quot;postgresql://postgres@127.0.0.1:15432/accident_severity&quot;",
        "window_end = &quot;2024-01-07&quot;",
    ]


def test_the_index_keeps_a_long_error_whole_and_shows_warnings(tmp_path):
    cause = "https://data.dft.gov.uk/x.csv: the host name did not resolve; " + "use a mirror " * 40 + "END-OF-CAUSE"
    runs = [_run(tmp_path, status="failed", error_name="HostNotFound", error_value=cause),
            _run(tmp_path, warnings=["the executed notebook was not attached to its MLflow run"])]
    page = render(runs, tmp_path, datetime(2025, 3, 2, tzinfo=UTC))
    assert "END-OF-CAUSE" in page
    assert "warning: the executed notebook was not attached to its MLflow run" in page
