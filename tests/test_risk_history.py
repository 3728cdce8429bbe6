"""History features: KSI shares of earlier collisions, learnt from released labels only, shrunk when sparse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.data.curated import build_curated
from lib.data.features import FEATURE_COLUMNS
from lib.data.synth import generate
from lib.modeling.candidates import fit_families
from lib.modeling.model import feature_matrix
from lib.modeling.risk_history import HISTORY_FEATURES, PRIOR_COLLISIONS, RiskHistory, out_of_fold
from lib.modeling.split import split_by_labels_known, split_by_years


@pytest.fixture(scope="module")
def curated() -> pd.DataFrame:
    tables = generate(range(2016, 2019), 2000, seed=23)
    return build_curated(tables.collisions, tables.vehicles, tables.casualties)


def history_of(model, frame: pd.DataFrame) -> np.ndarray:
    return model.classifier.history.transform(feature_matrix(frame))


def flip_ksi(frame: pd.DataFrame) -> pd.DataFrame:
    """The same collisions with serious and slight swapped (fatal ones stay fatal)."""
    severity = frame["collision_severity"]
    return frame.assign(collision_severity=severity.where(severity == 1, 5 - severity).astype("int8"))


def test_history_features_use_no_label_the_split_has_not_released(curated):
    split = split_by_labels_known(pd.Timestamp("2018-10-01").date(), label_delay_days=30)
    parts = split.apply(curated)
    fitted = fit_families(parts["train"], parts["validation"], seed=0).models["blend"]
    # Later labels (validation, test, and everything not yet released) change nothing in the features...
    unreleased = pd.concat([flip_ksi(parts["validation"]), flip_ksi(parts["test"])], ignore_index=True)
    refitted = fit_families(parts["train"], flip_ksi(parts["validation"]), seed=0).models["blend"]
    assert np.array_equal(history_of(fitted, unreleased), history_of(refitted, unreleased))
    # ...while the training labels are what they are made of.
    relabelled = fit_families(flip_ksi(parts["train"]), parts["validation"], seed=0).models["blend"]
    assert not np.allclose(history_of(fitted, parts["test"]), history_of(relabelled, parts["test"]))


def test_a_training_row_never_sees_its_own_label(curated):
    X = feature_matrix(curated)
    ksi = curated["ksi"].to_numpy().astype(bool)
    encoded = out_of_fold(X, ksi, seed=1)
    flipped = ksi.copy()
    flipped[0] = not flipped[0]
    changed = out_of_fold(X, flipped, seed=1)
    # Row 0's own value is computed without its fold; rows of the other folds in its place see the change.
    assert np.array_equal(changed[0], encoded[0])
    assert not np.array_equal(changed, encoded)
    assert np.array_equal(out_of_fold(X, ksi, seed=1), encoded)  # seeded, so reproducible


def place(latitude: float, longitude: float, rows: int) -> np.ndarray:
    X = np.full((rows, len(FEATURE_COLUMNS)), np.nan)
    X[:, FEATURE_COLUMNS.index("latitude")] = latitude
    X[:, FEATURE_COLUMNS.index("longitude")] = longitude
    X[:, FEATURE_COLUMNS.index("police_force")] = 1
    return X


def test_small_cells_shrink_towards_the_wider_area_and_large_ones_speak_for_themselves():
    background = place(51.30, -0.50, 2000)  # a busy cell elsewhere in the same force area, 10% KSI
    busy = place(51.55, -0.05, 400)  # 400 collisions, all KSI
    lone = place(51.75, 0.20, 1)  # a single KSI collision
    X = np.vstack([background, busy, lone])
    ksi = np.concatenate([np.arange(2000) % 10 == 0, np.ones(401, dtype=bool)])
    history = RiskHistory.fit(X, ksi)
    area = history.shares(np.vstack([busy[:1], lone]))["history_area_ksi"].to_numpy()
    force_share = ksi.mean()
    assert area[0] == pytest.approx(1.0, abs=0.1)  # hundreds of collisions outweigh the prior
    # One collision moves its ~5 km cell's share and then its ~1 km cell's at most 1 / (1 + prior) each.
    assert abs(area[1] - force_share) < 2 / (1 + PRIOR_COLLISIONS)
    assert area[1] > force_share
    unknown = history.shares(place(np.nan, np.nan, 1))["history_area_ksi"].iloc[0]
    assert unknown == pytest.approx(force_share, abs=0.05)  # no location: the force's share


def test_history_features_need_only_the_request_columns(curated):
    parts = split_by_years([2016], 2017, 2018).apply(curated)
    fitted = fit_families(parts["train"], parts["validation"], seed=0).models["blend"]
    encoded = history_of(fitted, parts["test"][FEATURE_COLUMNS])
    assert encoded.shape == (len(parts["test"]), len(HISTORY_FEATURES)) and np.isfinite(encoded).all()
