"""The HTML copy of an executed notebook: a summary of the run first, the code folded away, and the
template's CSS shared by every page of a folder."""

from __future__ import annotations

import hashlib
import html
import json
import re
from functools import cache
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter


@cache
def _html_exporter() -> HTMLExporter:
    # The lab template inlines its CSS from the installed nbconvert files, so converting needs no
    # network; only a reader's browser fetches MathJax and require.js, for maths and widgets.
    return HTMLExporter(template_name="lab")


HTML_ASSETS = "assets"


_HEAD_STYLE = re.compile(r"<style[^>]*>.*?</style>\s*", re.DOTALL)


_MERMAID_LOADER = re.compile(r"<script type=\"module\">(?:(?!</script>).)*\.jp-Mermaid.*?</script>\s*", re.DOTALL)


# Code is folded away until asked for, so the page opens on the narrative and the results.
_SUMMARY_STYLE = """
.run-summary { font-family: sans-serif; margin: 1em 2em 0.5em; padding: 0.6em 1em; border: 1px solid #d0d7de;
  border-left: 0.5em solid #1a7f37; border-radius: 6px; background: #f6f8fa; }
.run-summary.failed { border-left-color: #cf222e; background: #fff5f5; }
.run-summary h1 { font-size: 1.2em; margin: 0 0 0.3em; } .run-summary p { margin: 0.2em 0; }
.run-summary code { font-size: 0.85em; }
body:not(.show-code) .jp-CodeCell .jp-Cell-inputWrapper, body:not(.show-code) .jp-mod-noOutputs { display: none; }
"""


def _shared_css(styles: str, folder: Path) -> str:
    """Store the template's inline CSS once per folder, named by its content; return its file name."""
    name = f"notebook-{hashlib.sha256(styles.encode()).hexdigest()[:12]}.css"
    target = folder / HTML_ASSETS / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.partial")
        partial.write_text(_css_text(styles), encoding="utf-8")
        partial.replace(target)
    return f"{HTML_ASSETS}/{name}"


def _css_text(styles: str) -> str:
    """The CSS inside a run of `<style>` elements."""
    return "\n".join(re.sub(r"^<style[^>]*>|</style>\s*$", "", block.strip()) for block in _HEAD_STYLE.findall(styles))


def _run_summary(nb) -> str:
    """The run at a glance: the notebook's title, outcome, time, duration and parameters."""
    run = nb.metadata.get("papermill", {})
    title = next(
        (
            line.lstrip("# ").strip()
            for cell in nb.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("# ")
        ),
        Path(run.get("input_path", "notebook")).stem,
    )
    failed = bool(run.get("exception"))
    outcome = "failed: the first cell says where and why" if failed else "succeeded"
    duration = f"{run['duration']:.1f} s" if run.get("duration") is not None else "unknown"
    parameters = ", ".join(
        f"<code>{html.escape(name)} = {html.escape(json.dumps(value, default=str))}</code>"
        for name, value in sorted(run.get("parameters", {}).items())
    )
    return (
        f"<section class='run-summary{' failed' if failed else ''}'><h1>{html.escape(title)}</h1>"
        f"<p><b>{outcome}</b> · started {html.escape(str(run.get('start_time', 'unknown')))} · took {duration}</p>"
        f"<p>Parameters: {parameters or 'none'}</p>"
        "<p><label><input type='checkbox' onchange=\"document.body.classList.toggle('show-code', this.checked)\">"
        " show the code</label> · <a href='../../index.html'>every notebook run</a></p></section>"
    )


def write_html(ipynb: Path) -> Path:
    """Write the HTML copy of an executed notebook next to it: a summary of the run first, the code
    folded away, and the template's 260 KB of CSS in one shared file per folder instead of every page."""
    nb = nbformat.read(ipynb, as_version=4)
    page, _ = _html_exporter().from_notebook_node(nb)
    head_end = page.index("</head>")
    styles = "".join(_HEAD_STYLE.findall(page[:head_end]))
    stylesheet = _shared_css(styles, ipynb.parent)
    head = _HEAD_STYLE.sub("", page[:head_end])
    if "jp-Mermaid" not in page[head_end:]:  # the template's 11 KB Mermaid loader has nothing to draw
        head = _MERMAID_LOADER.sub("", head)
    head += f"<link rel='stylesheet' href='{stylesheet}'><style>{_SUMMARY_STYLE}</style>"
    body = re.sub(r"<body([^>]*)>", lambda m: m.group(0) + _run_summary(nb), page[head_end:], count=1)
    target = ipynb.with_suffix(".html")
    target.write_text(head + body, encoding="utf-8")
    return target
