"""The dashboard and an Evidently report, rendered by a real browser: panels drawn, no script errors.

Uses Debian's `chromium` headless (`.ci/run` installs it). Chromium runs each page's scripts, then
prints the resulting DOM (`--dump-dom`) and, on stderr, every console message; an uncaught script
error shows up there as `Uncaught ...`.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2.extras
import pytest

from lib.monitoring import evidently_report, monitor, places, retraining
from lib.monitoring.dashboard import PANELS, write_dashboard
from lib.store import db
from lib.store.metrics import DRIFT, DRIFT_ROWS_METRIC, DRIFT_SHARE_METRIC, QUALITY

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed here: `apt-get install chromium` (Debian's package; .ci/run installs it)",
)
FIRST = date(2032, 3, 1)


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and the console messages they logged."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, re.findall(r":CONSOLE[^\]]*\] (.*)", done.stderr)


def scored_window(days: int = 14, per_day: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    ksi = rng.random(n) < 0.3
    p_ksi = np.clip(0.3 + 0.3 * (ksi - 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)
    return pd.DataFrame(
        {
            "collision_index": [f"BROWSER{i:05d}" for i in range(n)],
            "collision_date": [FIRST + timedelta(days=i // per_day) for i in range(n)],
            "p_ksi": p_ksi,
            "ksi": ksi.astype(int),
            "ksi_alert": p_ksi >= 0.4,
            "latitude": 51.5 + rng.normal(0, 0.05, n),
            "longitude": -0.1 + rng.normal(0, 0.08, n),
        }
    )


@pytest.fixture
def reports(fresh_database, tmp_path) -> Path:
    """A dashboard over two monitored weeks, the first labelled, and that week's classification report."""
    scored = scored_window()
    reports = tmp_path / "reports"
    with db.session(fresh_database) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO predictions (collision_index, model_version, collision_date, window_start, window_end,"
            " p_fatal, p_serious, p_slight, p_ksi, predicted_severity, ksi_alert, alert_threshold) VALUES %s",
            [
                (
                    row.collision_index,
                    "1",
                    row.collision_date,
                    FIRST,
                    FIRST + timedelta(days=13),
                    row.p_ksi / 10,
                    row.p_ksi * 0.9,
                    1 - row.p_ksi,
                    row.p_ksi,
                    2 if row.ksi_alert else 3,
                    bool(row.ksi_alert),
                    0.4,
                )
                for row in scored.itertuples()
            ],
        )
        for week in range(2):
            start, end = FIRST + timedelta(days=7 * week), FIRST + timedelta(days=7 * week + 6)
            drift = {
                DRIFT_SHARE_METRIC: 0.05 + 0.2 * week,
                DRIFT_ROWS_METRIC: 280,
                "drift.feature_score.hour": 0.03,
                "drift.feature_score.speed_limit": 0.2 * week,
            }
            monitor.store_metrics(conn, start, end, "1", DRIFT, drift, end)
        first_week = scored[scored["collision_date"] <= FIRST + timedelta(days=6)]
        quality = monitor.compute_quality(
            first_week.assign(
                p_fatal=0.0,
                p_serious=first_week["p_ksi"],
                p_slight=1 - first_week["p_ksi"],
                predicted_severity=np.where(first_week["ksi_alert"], 2, 3),
                collision_severity=np.where(first_week["ksi"] == 1, 2, 3),
            ),
            FIRST,
            FIRST + timedelta(days=6),
            FIRST + timedelta(days=40),
            30,
        )
        monitor.store_metrics(
            conn, FIRST, FIRST + timedelta(days=6), "1", QUALITY, quality.metrics(), quality.known_at
        )
        heading = evidently_report.ReportHeading(
            evidently_report.QUALITY,
            FIRST,
            FIRST + timedelta(days=6),
            "accident_severity",
            "1",
            f"{len(first_week)} labelled collisions",
        )
        evidently_report.save_report(monitor.classification_snapshot(first_week, 0.4), reports, heading)
        # The labelled week by place: two authorities, and the grid's 0.25° cells.
        by_place = first_week.assign(local_authority_highway=np.where(first_week.index % 3, "E09000031", "E09000026"))
        week = (FIRST, FIRST + timedelta(days=6), "1")
        places.store_snapshot(conn, places.place_snapshot(by_place, [week], quality.known_at, places.PlacePolicy()))
        latest = scored[scored["collision_date"] > FIRST + timedelta(days=6)]
        write_dashboard(
            conn,
            reports,
            {"test_ksi_pr_auc": 0.5},
            retraining.RetrainingPolicy(),
            latest_collisions=latest,
            latest_window=(FIRST + timedelta(days=7), FIRST + timedelta(days=13)),
        )
    return reports


def test_the_dashboard_draws_every_panel_and_the_map_without_script_errors(reports, tmp_path):
    dom, console = render(reports / "dashboard.html", tmp_path / "profile")
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    text = html.unescape(dom)
    missing = [title for title, _ in PANELS if title not in text]
    assert not missing, f"panels plotly did not draw: {missing}"
    assert "Collisions of the latest window, 2032-03-08..2032-03-14" in text  # the map, drawn
    assert "Observed against expected KSI collisions: red, more than the model expected" in text  # by place
    assert text.count('class="main-svg"') >= 6  # the panels', the map's and the places' plots
    assert "Is it drifting?" in text and 'href="monitoring/quality_2032-03-01_2032-03-07_model-1.html"' in dom


def test_an_evidently_report_unpacks_its_data_and_draws_with_the_shared_bundle(reports, tmp_path):
    report = reports / "monitoring" / "quality_2032-03-01_2032-03-07_model-1.html"
    dom, console = render(report, tmp_path / "profile")
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    text = html.unescape(dom)
    assert "KSI classification quality, from the labels that arrived: 2032-03-01..2032-03-07, model 1" in text
    # Drawn by Evidently's bundle from the packed data: its widgets and their plotly charts.
    assert "Confusion Matrix" in text and 'class="main-svg"' in dom
