"""`REPORTS_DIR/index.html`: every notebook run, newest first, with links to what it left behind.

The page is rebuilt from `notebook_runs` each time, so it lists failures and runs still marked
'running' (a run killed outright) as well. Links are relative to the page when the executed
notebook lies under REPORTS_DIR, so the folder can be moved or served as it is; otherwise they
are absolute `file://` URLs. Each run is one compact row with its parameters folded; a few lines
of inline script filter the rows by notebook and status (without scripts every row shows). The page
fetches nothing.
"""

from __future__ import annotations

import html
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from lib.store import runs as notebook_runs

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"
STATUS_COLOURS = {
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "timed_out": "#bc4c00",
    "interrupted": "#8250df",
    "running": "#0969da",
}
# Other pages of REPORTS_DIR that the index points to when they exist.
COMPANION_PAGES = {"dashboard.html": "monitoring dashboard"}

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.parameters { font-family: monospace; font-size: 0.85em; max-width: 40em; overflow-wrap: anywhere; }
td.parameters summary { cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.filters { margin: 0.5em 0; } .filters select { margin-right: 1em; }
td.number { text-align: right; }
.status { font-weight: bold; }
.error { color: #cf222e; font-size: 0.85em; }
.warning { color: #9a6700; font-size: 0.85em; }
.pruned { color: #8c959f; font-size: 0.85em; }
"""


def _link(target: str | None, reports_dir: Path, label: str) -> str:
    if not target:
        return ""
    path = Path(target)
    if not path.exists():  # pruned (lib.runner.retention) or moved away
        return f'<span class="pruned" title="{html.escape(target)}">{html.escape(label)}: pruned</span>'

    try:
        href = path.resolve().relative_to(reports_dir.resolve()).as_posix()
    except ValueError:
        href = path.resolve().as_uri()
    return f'<a href="{html.escape(href)}">{html.escape(label)}</a>'


# Shows only the rows matching both filters.
FILTER_SCRIPT = """
function filterRuns() {
  const notebook = document.getElementById("notebook-filter").value;
  const status = document.getElementById("status-filter").value;
  for (const row of document.querySelectorAll("tbody tr")) {
    row.hidden = (notebook && row.dataset.notebook !== notebook) || (status && row.dataset.status !== status);
  }
}
"""
SUMMARY_CHARACTERS = 60


def _parameters(parameters: dict) -> str:
    """The parameters folded: a one-line summary that opens onto one parameter a line."""
    if not parameters:
        return ""
    pairs = [f"{name} = {json.dumps(value, default=str)}" for name, value in sorted(parameters.items())]
    summary = ", ".join(pairs)
    if len(summary) > SUMMARY_CHARACTERS:
        summary = summary[: SUMMARY_CHARACTERS - 1] + "…"
    return (
        f"<details><summary>{html.escape(summary)}</summary>"
        + "<br>".join(html.escape(pair) for pair in pairs)
        + "</details>"
    )


def _select(element_id: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return (
        f'<label>{label} <select id="{element_id}" onchange="filterRuns()"><option value="">all</option>'
        f"{options}</select></label>"
    )


def _row(run: dict, reports_dir: Path) -> str:
    status = run["status"]
    colour = STATUS_COLOURS.get(status, "#000")
    error = ""
    if status != "succeeded" and run["error_name"]:
        where = f"cell {run['failed_cell']}: " if run["failed_cell"] is not None else ""
        error = (
            f'<div class="error">{html.escape(where)}{html.escape(run["error_name"])}: '
            + html.escape(run["error_value"] or "")
            + "</div>"
        )
    error += "".join(f'<div class="warning">warning: {html.escape(w)}</div>' for w in run["warnings"] or [])
    duration = f"{run['duration_s']:.1f} s" if run["duration_s"] is not None else ""
    links = " ".join(
        filter(None, [_link(run["output_html"], reports_dir, "HTML"), _link(run["output_ipynb"], reports_dir, "ipynb")])
    )
    return (
        f'<tr data-notebook="{html.escape(run["notebook"])}" data-status="{html.escape(status)}">'
        f"<td>{run['started_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S}</td>"
        f"<td>{html.escape(run['notebook'])}</td>"
        f'<td><span class="status" style="color:{colour}">{html.escape(status)}</span>{error}</td>'
        f'<td class="number">{duration}</td>'
        f'<td class="parameters">{_parameters(run["parameters"] or {})}</td>'
        f"<td>{links}</td>"
        f"<td><code>{html.escape(run['run_id'])}</code></td>"
        "</tr>"
    )


def render(runs: list[dict], reports_dir: Path, generated: datetime) -> str:
    """The page for `runs` (newest first), with links relative to `reports_dir`."""
    reports_dir = Path(reports_dir)
    counts = {}
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    summary = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in sorted(counts.items()))
    companions = [
        f'<a href="{html.escape(name)}">{html.escape(label)}</a>'
        for name, label in COMPANION_PAGES.items()
        if (reports_dir / name).exists()
    ]
    rows = "\n".join(_row(run, reports_dir) for run in runs)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        "<title>Accident severity forecast: notebook runs</title>"
        f"<style>{STYLE}</style><script>{FILTER_SCRIPT}</script></head><body>"
        "<h1>Notebook runs</h1>"
        f"<p>{len(runs)} run(s){': ' + html.escape(summary) if summary else ''}. Newest first; generated "
        f"{generated:%Y-%m-%d %H:%M:%S %Z} from the notebook_runs table.</p>"
        + (f"<p>See also: {' · '.join(companions)}.</p>" if companions else "")
        + '<div class="filters">'
        + _select("notebook-filter", "notebook", sorted({run["notebook"] for run in runs}))
        + _select("status-filter", "status", sorted(counts))
        + "</div><table><thead><tr><th>started (UTC)</th><th>notebook</th><th>status</th><th>duration</th>"
        "<th>parameters</th><th>outputs</th><th>run id</th></tr></thead><tbody>\n"
        + rows
        + "\n</tbody></table></body></html>\n"
    )


def write_index(conn, reports_dir: Path) -> Path:
    """Rebuild `reports_dir/index.html` from `notebook_runs`, replacing the old page atomically."""
    reports_dir = Path(reports_dir)
    runs = notebook_runs.all_runs(conn)
    page = render(runs, reports_dir, datetime.now(UTC))
    target = reports_dir / INDEX_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, target)
    log.debug("Wrote the index of %d notebook runs to %s.", len(runs), target)
    return target
