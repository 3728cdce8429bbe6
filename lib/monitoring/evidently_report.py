"""The Evidently reports of a monitoring window, light enough to keep one per window for a year.

Evidently's own HTML copies its 3.5 MB JavaScript bundle and a 126 KB icon font into every page, and
writes the report's data as full-precision JSON (about 0.6 MB for a week of collisions). Here each
page instead references one shared copy of the bundle (packed: 1.3 MB) and the font in
`REPORTS_DIR/monitoring/assets/` (written once per Evidently version), and carries its data rounded
to 4 significant digits and packed (lib.monitoring.html_packing): about 35 KB a report. Every page opens with a
heading naming the window, the model version and the rows compared, so a report read on its own says
what it covers.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from lib.monitoring import html_packing
from lib.store.metrics import DRIFT, QUALITY

log = logging.getLogger(__name__)

KIND_TITLES = {
    DRIFT: "Drift of the features and predictions",
    QUALITY: "KSI classification quality, from the labels that arrived",
}
ASSETS = "assets"
FONT = "material-ui-icons.woff2"
SIGNIFICANT_DIGITS = 4
# The two variables Evidently's page template (evidently.legacy.utils.dashboard) assigns its data to.
_DATA = re.compile(r"var (metric_\w+) = (.*);\n\s*var additional_graphs_\1 = (.*);\n", re.MULTILINE)

STYLE = """
body { font-family: sans-serif; margin: 0; }
header { padding: 0.8em 2em; border-bottom: 1px solid #ddd; background: #f6f8fa; }
header h1 { font-size: 1.3em; margin: 0 0 0.3em 0; }
header p { margin: 0.2em 0; }
@font-face { font-family: 'Material Icons'; font-style: normal; font-weight: 400;
  src: url(%(font)s) format('woff2'); }
.material-icons { font-family: 'Material Icons'; font-weight: normal; font-style: normal; font-size: 24px;
  line-height: 1; letter-spacing: normal; text-transform: none; display: inline-block; white-space: nowrap;
  word-wrap: normal; direction: ltr; -webkit-font-smoothing: antialiased; }
"""

# Unpacks Evidently's bundle and the report's data, and draws the report as Evidently's own page does.
DRAW = """
(async () => {
  runScript(await unpackText(window.evidentlyBundle));
  const data = JSON.parse(await unpackText(document.getElementById("report-data").textContent));
  window.drawDashboard(data.info, new Map(Object.entries(data.graphs)), "report-root");
})();
"""


@dataclass(frozen=True)
class ReportHeading:
    """What a report covers, shown at its top and in its title."""

    kind: str  # DRIFT or QUALITY
    window_start: date
    window_end: date
    model_name: str
    model_version: str
    compared: str  # the rows compared, in words: "583 collisions of the window against 5,000 reference rows"

    @property
    def title(self) -> str:
        return f"{KIND_TITLES[self.kind]}: {self.window_start}..{self.window_end}, model {self.model_version}"

    def html(self) -> str:
        return (
            f"<header><h1>{html.escape(self.title)}</h1>"
            f"<p>Window <b>{self.window_start} to {self.window_end}</b> · model <b>{html.escape(self.model_name)}"
            f" version {html.escape(self.model_version)}</b> · {html.escape(self.compared)}</p>"
            "<p><a href='../dashboard.html'>monitoring dashboard</a> · <a href='../index.html'>notebook runs</a></p>"
            "</header>"
        )


def report_path(reports_dir: Path, kind: str, window_start: date, window_end: date, model_version: str) -> Path:
    """Where a window's report of `kind` lives; one file per kind, window and model version."""
    if kind not in KIND_TITLES:
        raise ValueError(f"report kind {kind!r} is not one of {', '.join(KIND_TITLES)}")
    return Path(reports_dir) / "monitoring" / f"{kind}_{window_start}_{window_end}_model-{model_version}.html"


def _evidently():
    import evidently  # seconds to import; only writing a report needs it

    return evidently


def _static_folder() -> Path:
    return Path(_evidently().__file__).parent / "nbextension" / "static"


def _bundle_name() -> str:
    return f"evidently-{_evidently().__version__}.packed.js"


def _write_once(target: Path, content: bytes | str) -> None:
    if not target.exists():
        partial = target.with_name(f".{target.name}.partial")
        if isinstance(content, str):
            partial.write_text(content, encoding="utf-8")
        else:
            partial.write_bytes(content)
        os.replace(partial, target)


def shared_assets(monitoring_dir: Path) -> tuple[str, str]:
    """Write Evidently's bundle (packed, as `window.evidentlyBundle`) and font into `monitoring_dir/assets`
    unless there; return their relative URLs."""
    folder = Path(monitoring_dir) / ASSETS
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / _bundle_name()
    if not bundle.exists():
        source = (_static_folder() / "index.js").read_text(encoding="utf-8")
        _write_once(bundle, f'window.evidentlyBundle = "{html_packing.pack(source)}";\n')
    _write_once(folder / FONT, (_static_folder() / FONT).read_bytes())
    return f"{ASSETS}/{bundle.name}", f"{ASSETS}/{FONT}"


def _rounded(value):
    """The JSON value with floats to SIGNIFICANT_DIGITS, and NaN or infinity as null (JSON has neither)."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def report_data(snapshot) -> dict:
    """The widgets and additional graphs Evidently would embed in its page for `snapshot`."""
    page = snapshot.get_html_str(as_iframe=False)
    found = _DATA.search(page)
    if found is None:
        raise RuntimeError(
            f"Evidently {_evidently().__version__} no longer writes its report data as this module expects "
            "(lib/monitoring/evidently_report.py reads the two variables of "
            "evidently.legacy.utils.dashboard's template)"
        )
    # Evidently writes its data as JavaScript, where NaN is allowed: Python's json reads it too.
    return {"info": json.loads(found.group(2)), "graphs": json.loads(found.group(3))}


def pack(data: dict) -> str:
    """The report data as rounded, compact JSON, packed (lib.monitoring.html_packing)."""
    return html_packing.pack(json.dumps(_rounded(data), separators=(",", ":"), allow_nan=False))


def unpack(packed: str) -> dict:
    """The inverse of `pack`: what the page's script hands to Evidently."""
    return json.loads(html_packing.unpack(packed))


def render(snapshot, heading: ReportHeading, bundle_url: str, font_url: str) -> str:
    """The report page: heading, shared bundle and font, packed data."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1.0'>"
        f"<title>{html.escape(heading.title)}</title>"
        f"<style>{STYLE % {'font': font_url}}</style></head><body>" + heading.html() + "<div id='report-root'></div>"
        "<script>var global = globalThis</script>"
        f"<script src='{html.escape(bundle_url)}'></script>"
        f"<script type='application/octet-stream' id='report-data'>{pack(report_data(snapshot))}</script>"
        f"<script>{html_packing.UNPACK_JS}{DRAW}</script>"
        "</body></html>\n"
    )


def save_report(snapshot, reports_dir: Path, heading: ReportHeading) -> Path:
    """Write the window's report, replacing an earlier one for the same window atomically."""
    target = report_path(reports_dir, heading.kind, heading.window_start, heading.window_end, heading.model_version)
    bundle_url, font_url = shared_assets(target.parent)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(render(snapshot, heading, bundle_url, font_url), encoding="utf-8")
    os.replace(partial, target)
    log.info(
        "Wrote the Evidently %s report of %s..%s to %s.", heading.kind, heading.window_start, heading.window_end, target
    )
    return target
