"""The `model_events` table: promotions and retraining decisions, with the numbers that decided them."""

from __future__ import annotations

import json
from datetime import date

from lib.store.db import fetch_dicts

PROMOTED, NOT_PROMOTED = "promoted", "not_promoted"
RETRAINING_RECOMMENDED, RETRAINING_NOT_NEEDED = "retraining_recommended", "retraining_not_needed"
DECISION_EVENTS = (RETRAINING_RECOMMENDED, RETRAINING_NOT_NEEDED)
RETRAINED = "retrained"
# What the labels said about a recommendation the estimated quality made before they arrived.
RETRAINING_CONFIRMED, RETRAINING_WITHDRAWN = "retraining_confirmed", "retraining_withdrawn"
REVIEW_EVENTS = (RETRAINING_CONFIRMED, RETRAINING_WITHDRAWN)


def record(conn, event: str, model_name: str, model_version: str | None, details: dict,
           simulated_date: date | None) -> int:
    """Write one event; return its id."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO model_events (event, model_name, model_version, details, simulated_date)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (event, model_name, model_version, json.dumps(details, default=str), simulated_date),
        )
        return cur.fetchone()[0]


def replace_decision(conn, event: str, model_name: str, model_version: str, details: dict, day: date) -> int:
    """Write a retraining decision, replacing the version's earlier decision for the same day; return its id."""
    if event not in DECISION_EVENTS:
        raise ValueError(f"{event!r} is not a retraining decision (one of {', '.join(DECISION_EVENTS)})")
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM model_events WHERE event IN %s AND model_name = %s AND model_version = %s"
            " AND simulated_date = %s",
            (DECISION_EVENTS, model_name, model_version, day),
        )
    return record(conn, event, model_name, model_version, details, day)


def decision_on(conn, model_name: str, day: date) -> dict | None:
    """{'event', 'details'} of the latest retraining decision for the model on `day`, or None."""
    rows = fetch_dicts(
        conn,
        "SELECT event, details FROM model_events WHERE model_name = %s AND simulated_date = %s AND event IN %s"
        " ORDER BY id DESC LIMIT 1",
        (model_name, day, DECISION_EVENTS),
    )
    return rows[0] if rows else None


def provisional_awaiting_review(conn, model_name: str, as_of: date) -> list[dict]:
    """{'model_version', 'simulated_date', 'details'} of the model's provisional retraining recommendations made
    by `as_of` that no confirmation or withdrawal answers yet, oldest first."""
    return fetch_dicts(
        conn,
        "SELECT d.model_version, d.simulated_date, d.details FROM model_events d"
        " WHERE d.model_name = %(model)s AND d.event = %(recommended)s AND d.simulated_date <= %(as_of)s"
        " AND coalesce((d.details->>'provisional')::boolean, false) AND NOT EXISTS ("
        "  SELECT 1 FROM model_events r WHERE r.model_name = d.model_name AND r.model_version = d.model_version"
        "  AND r.event IN %(reviews)s AND r.details->>'decided_on' = d.simulated_date::text)"
        " ORDER BY d.simulated_date, d.id",
        {"model": model_name, "recommended": RETRAINING_RECOMMENDED, "as_of": as_of, "reviews": REVIEW_EVENTS},
    )


def last_retrained(conn, model_name: str) -> date | None:
    """The latest simulated day on which the model was retrained, or None."""
    return fetch_dicts(
        conn,
        "SELECT max(simulated_date) AS day FROM model_events WHERE event = %s AND model_name = %s",
        (RETRAINED, model_name),
    )[0]["day"]
