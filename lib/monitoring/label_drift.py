"""Label drift that knows how severity was reported: did a window's KSI share move, and is it the reporting?

STATS19's recorded KSI share rises as police forces move to injury-based reporting (CRaSH, COPA):
an officer's judgement records fewer serious injuries than a list of injuries does (lib/data/README.md,
"Severity"). So a window's KSI share is compared with the model's reference sample (its training
period) in three ways:

* **raw**: the share itself;
* **within strata**: split by reporting regime (`collision_injury_based`: injury-based, severity
  reporting, or not said), the change splits exactly into the part the window's regime mix accounts
  for (`mix_change`: each regime at its reference share) and the change within regimes
  (`within_change`). Files before the 2024 specification do not say how severity was reported, and
  the shared data does not record which force moved when; there the split is by police force,
  comparing each force's share in the window's year with its share in the training years;
* **adjusted**, where DfT's adjusted severity is present in both: the mean probability of KSI under
  injury-based reporting (fatal, plus `collision_adjusted_severity_serious`).

The verdict (`VERDICTS`): **label drift** when the share moved within strata or in the adjusted share;
else **no change** when the raw share did not move; else a **reporting change** (or, split by police
force, a **police-force mix**) when the mix accounts for a change, and **label drift** when neither part
alone does.
A change counts when it is at least `MIN_CHANGE` and `Z_THRESHOLD` standard errors (both samples'
binomial errors; it is tested every window, hence 3 rather than 2). A reporting change is not decay.
The reference spans whole years and a window a week, so the season moves a window's share too (on
synthetic data by up to 1.5 points a month): that is label drift the model foresaw, as its P(KSI)
follows the season, and it is said so.

The model's own expectation rides along: the window's mean P(KSI). Label drift that the model foresaw
(its features moved, and its P(KSI) with them) is not a reason to retrain; label drift it did not
(`unforeseen`) is (lib.monitoring.retraining).

`LabelCounts` reduces a labelled sample to counts, so windows pool by adding them and a window's
comparison is stored as the `labels.*` family of `monitoring_metrics` (`LabelDrift.metrics`) and read
back (`pooled`) for the retraining decision over the last labelled windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.store.metrics import LABELS

REGIMES = {1: "injury_based", 0: "severity_reporting"}
UNKNOWN = "unknown"
VERDICTS = ("no change", "reporting change", "police-force mix", "label drift")
Z_THRESHOLD = 3.0
MIN_CHANGE = 0.02  # two points of KSI share
MIN_REGIME_SHARE = 0.5  # of both samples' rows carrying their regime, for the split to be by regime
MIN_REFERENCE_ROWS = 20  # a stratum with fewer reference rows has no reference share to compare with
_WINDOW, _REFERENCE = f"{LABELS}.", f"{LABELS}.reference."


@dataclass(frozen=True)
class LabelCounts:
    """A labelled sample as counts: collisions and KSI per regime and per police force, DfT's adjusted KSI
    (summed over the rows that carry it) and the model's expectation (sum of P(KSI) and of its variance)."""

    regimes: dict[str, tuple[int, int]]
    forces: dict[str, tuple[int, int]]
    adjusted_rows: int = 0
    adjusted_ksi: float = 0.0
    predicted_ksi: float = 0.0
    predicted_variance: float = 0.0

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> LabelCounts:
        """From curated rows with labels (`ksi`, `collision_severity`, `police_force`, the reporting columns
        where present) and, for a scored window, `p_ksi`."""
        ksi = frame["ksi"].astype(int).to_numpy()
        regime = _codes(frame, "collision_injury_based").map(REGIMES).fillna(UNKNOWN)
        force = _codes(frame, "police_force").astype("string").fillna(UNKNOWN)
        adjusted = _adjusted_ksi(frame)
        known = ~np.isnan(adjusted)
        p_ksi = frame["p_ksi"].astype(float).to_numpy() if "p_ksi" in frame else np.zeros(len(frame))
        return cls(
            _tally(regime, ksi),
            _tally(force, ksi),
            int(known.sum()),
            float(adjusted[known].sum()),
            float(p_ksi.sum()),
            float((p_ksi * (1 - p_ksi)).sum()),
        )

    def __add__(self, other: LabelCounts) -> LabelCounts:
        return LabelCounts(
            _merge(self.regimes, other.regimes),
            _merge(self.forces, other.forces),
            self.adjusted_rows + other.adjusted_rows,
            self.adjusted_ksi + other.adjusted_ksi,
            self.predicted_ksi + other.predicted_ksi,
            self.predicted_variance + other.predicted_variance,
        )

    @property
    def rows(self) -> int:
        return sum(rows for rows, _ in self.regimes.values())

    @property
    def ksi(self) -> int:
        return sum(ksi for _, ksi in self.regimes.values())

    @property
    def ksi_share(self) -> float | None:
        return self.ksi / self.rows if self.rows else None

    @property
    def adjusted_ksi_share(self) -> float | None:
        return self.adjusted_ksi / self.adjusted_rows if self.adjusted_rows else None

    @property
    def regime_known_share(self) -> float:
        return 1 - self.regimes.get(UNKNOWN, (0, 0))[0] / self.rows if self.rows else 0.0

    def share_of(self, regime: str) -> float | None:
        """The share of the sample's collisions reported under `regime`."""
        return self.regimes.get(regime, (0, 0))[0] / self.rows if self.rows else None

    def metrics(self, prefix: str) -> dict[str, float]:
        """The counts as `monitoring_metrics` rows under `prefix` (`from_metrics` reads them back)."""
        values = {f"{prefix}rows": self.rows, f"{prefix}ksi": self.ksi, f"{prefix}ksi_share": self.ksi_share}
        for kind, strata in (("regime", self.regimes), ("force", self.forces)):
            for name, (rows, ksi) in strata.items():
                values.update({f"{prefix}{kind}.{name}.rows": rows, f"{prefix}{kind}.{name}.ksi": ksi,
                               f"{prefix}{kind}.{name}.ksi_share": ksi / rows})  # fmt: skip
        if self.adjusted_rows:
            values.update({f"{prefix}adjusted_rows": self.adjusted_rows, f"{prefix}adjusted_ksi": self.adjusted_ksi,
                           f"{prefix}adjusted_ksi_share": self.adjusted_ksi_share})  # fmt: skip
        if self.predicted_ksi:
            values.update({f"{prefix}predicted_ksi": self.predicted_ksi,
                           f"{prefix}predicted_variance": self.predicted_variance,
                           f"{prefix}predicted_ksi_share": self.predicted_ksi / self.rows})  # fmt: skip
        return values

    @classmethod
    def from_metrics(cls, values: Mapping[str, float], prefix: str) -> LabelCounts:
        """The counts `metrics(prefix)` wrote; other names (another prefix, the comparison) are ignored."""
        strata: dict[str, dict[str, list[float]]] = {"regime": {}, "force": {}}
        for name, value in values.items():
            kind, _, rest = name.removeprefix(prefix).partition(".")
            stratum, _, count = rest.rpartition(".")
            if name.startswith(prefix) and kind in strata and count in ("rows", "ksi"):
                strata[kind].setdefault(stratum, [0, 0])[count == "ksi"] = int(value)

        def number(name: str) -> float:
            return float(values.get(f"{prefix}{name}") or 0.0)

        regimes, forces = ({key: tuple(pair) for key, pair in strata[kind].items()} for kind in ("regime", "force"))
        return cls(regimes, forces, int(number("adjusted_rows")), number("adjusted_ksi"), number("predicted_ksi"),
                   number("predicted_variance"))  # fmt: skip


def _codes(frame: pd.DataFrame, column: str) -> pd.Series:
    """A nullable integer column; all missing when the frame lacks it (an older reference sample or era)."""
    if column not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="Int16")
    return frame[column].astype("Int16")


def _adjusted_ksi(frame: pd.DataFrame) -> np.ndarray:
    """P(KSI) under injury-based reporting: 1 if fatal, else DfT's adjusted P(serious); NaN where absent."""
    if "collision_adjusted_severity_serious" not in frame:
        return np.full(len(frame), np.nan)
    serious = frame["collision_adjusted_severity_serious"].astype(float).to_numpy()
    fatal = frame["collision_severity"].astype(int).to_numpy() == 1
    return np.where(fatal & ~np.isnan(serious), 1.0, serious)


def _tally(stratum: pd.Series, ksi: np.ndarray) -> dict[str, tuple[int, int]]:
    grouped = pd.DataFrame({"stratum": stratum.to_numpy(), "ksi": ksi}).groupby("stratum")["ksi"].agg(["size", "sum"])
    return {str(name): (int(row["size"]), int(row["sum"])) for name, row in grouped.iterrows()}


def _merge(a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {key: tuple(x + y for x, y in zip(a.get(key, (0, 0)), b.get(key, (0, 0)), strict=True)) for key in {*a, *b}}


def _variance(ksi: float, rows: float) -> float:
    """The binomial variance of a share of `rows`, smoothed so that a share of 0 or 1 is not certain."""
    share = (ksi + 0.5) / (rows + 1)
    return share * (1 - share) / rows


def _z(change: float, variance: float) -> float:
    return change / math.sqrt(variance) if variance > 0 else 0.0


def _counts(change: float | None, z: float | None) -> bool:
    return change is not None and abs(change) >= MIN_CHANGE and abs(z) >= Z_THRESHOLD


# ----------------------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class LabelDrift:
    """A labelled window (or pooled windows) against the model's reference sample; shares are 0-1."""

    window: LabelCounts
    reference: LabelCounts
    by_force: bool  # split by police force: the samples do not say how severity was reported
    change: float
    change_z: float
    mix_change: float  # the part of `change` the strata mix accounts for
    mix_z: float
    within_change: float  # the part within strata (weighted by the window's strata)
    within_z: float
    adjusted_change: float | None  # None unless both samples carry DfT's adjusted severity
    adjusted_z: float | None
    verdict: str
    windows: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def strata(self) -> str:
        return "police force" if self.by_force else "reporting regime"

    @property
    def predicted_gap(self) -> float | None:
        """Actual minus the model's mean P(KSI) over the window's collisions; None without predictions."""
        if not self.window.predicted_ksi:
            return None
        return (self.window.ksi - self.window.predicted_ksi) / self.window.rows

    @property
    def predicted_gap_z(self) -> float | None:
        if not self.window.predicted_ksi:
            return None
        return _z(self.window.ksi - self.window.predicted_ksi, self.window.predicted_variance)

    @property
    def unforeseen(self) -> bool:
        """Label drift that the model's P(KSI) did not follow: a reason to retrain."""
        return self.verdict == "label drift" and _counts(self.predicted_gap, self.predicted_gap_z)

    def metrics(self) -> dict[str, float | None]:
        """The `labels.*` rows of `monitoring_metrics`: both samples' counts and the comparison."""
        return {
            **self.window.metrics(_WINDOW),
            **self.reference.metrics(_REFERENCE),
            f"{_WINDOW}by_police_force": float(self.by_force),
            f"{_WINDOW}change": self.change,
            f"{_WINDOW}change_z": self.change_z,
            f"{_WINDOW}mix_change": self.mix_change,
            f"{_WINDOW}mix_z": self.mix_z,
            f"{_WINDOW}within_change": self.within_change,
            f"{_WINDOW}within_z": self.within_z,
            f"{_WINDOW}adjusted_change": self.adjusted_change,
            f"{_WINDOW}adjusted_z": self.adjusted_z,
            f"{_WINDOW}verdict": float(VERDICTS.index(self.verdict)),
        }

    def sentence(self) -> str:
        """What happened to the KSI share and why, for a person."""
        window, reference = self.window, self.reference
        head = (
            f"KSI share {window.ksi_share:.1%} over {window.rows:,} collisions"
            f"{f' of {self.windows} labelled windows' if self.windows > 1 else ''} against "
            f"{reference.ksi_share:.1%} in the model's training sample ({_points(self.change)}, z {self.change_z:+.1f})"
        )
        parts = [self._strata_text()]
        if self.adjusted_change is not None:
            parts.append(
                f"DfT's adjusted KSI share is {window.adjusted_ksi_share:.1%} against "
                f"{reference.adjusted_ksi_share:.1%} ({_points(self.adjusted_change)}, z {self.adjusted_z:+.1f})"
            )
        if self.predicted_gap is not None:
            parts.append(
                f"the model expected {window.predicted_ksi / window.rows:.1%} ({_points(self.predicted_gap)} "
                f"actual against expected, z {self.predicted_gap_z:+.1f})"
            )
        parts.extend(self.notes)
        detail = "; ".join(parts)
        return f"{head}: {self.verdict}. {detail[0].upper()}{detail[1:]}. {self._meaning()}"

    def _strata_text(self) -> str:
        if self.by_force:
            return (
                f"the files do not say how severity was reported, so split by police force: the window's mix of "
                f"forces accounts for {_points(self.mix_change)} and the change within forces, between the "
                f"training years and the window's, is {_points(self.within_change)} (z {self.within_z:+.1f})"
            )
        injury, before = self.window.share_of("injury_based"), self.reference.share_of("injury_based")
        return (
            f"injury-based reporting covers {injury:.0%} of the collisions against {before:.0%} in training, which "
            f"accounts for {_points(self.mix_change)}; within each reporting regime the share moved "
            f"{_points(self.within_change)} (z {self.within_z:+.1f})"
        )

    def _meaning(self) -> str:
        if self.verdict == "reporting change":
            return "A reporting change, not decay: by itself no reason to retrain."
        if self.verdict == "police-force mix":
            return "The collisions came from other forces in other proportions; the model sees the force."
        if self.verdict == "no change":
            return "No change beyond chance."
        unknown = (
            " (or a force's move to injury-based reporting, which these files do not record)"
            if self.by_force
            else ", not explained by how severity was reported"
        )
        if self.unforeseen:
            return f"Label drift the model did not foresee{unknown}: a reason to retrain."
        if self.predicted_gap is None:
            return f"Label drift{unknown}."
        return "Label drift that the model's P(KSI) followed (its features moved too): by itself no reason to retrain."


def _points(change: float) -> str:
    return f"{change * 100:+.1f} points"


def compare(window: LabelCounts, reference: LabelCounts, windows: int = 1) -> LabelDrift:
    """The window's KSI share against the reference's, raw, within strata and adjusted (module docstring)."""
    if not window.rows or not reference.rows:
        raise ValueError(
            f"label drift needs labelled collisions in both samples; the window has {window.rows}, "
            f"the model's reference sample {reference.rows}"
        )
    by_force = min(window.regime_known_share, reference.regime_known_share) < MIN_REGIME_SHARE
    window_strata, reference_strata = (
        (window.forces, reference.forces) if by_force else (window.regimes, reference.regimes)
    )
    change = window.ksi_share - reference.ksi_share
    change_variance = _variance(window.ksi, window.rows) + _variance(reference.ksi, reference.rows)

    matched = {s: counts for s, counts in window_strata.items()
               if reference_strata.get(s, (0, 0))[0] >= MIN_REFERENCE_ROWS}  # fmt: skip
    matched_rows = sum(rows for rows, _ in matched.values())
    notes = []
    if matched_rows < 0.99 * window.rows:
        notes.append(f"{1 - matched_rows / window.rows:.0%} of the window's collisions are in "
                     f"{'forces' if by_force else 'regimes'} the training sample (almost) lacks")  # fmt: skip
    within, within_variance, mix_variance = 0.0, 0.0, 0.0
    for stratum, (rows, ksi) in matched.items():
        reference_rows, reference_ksi = reference_strata[stratum]
        weight, reference_weight = rows / matched_rows, reference_rows / reference.rows
        reference_share, reference_variance = reference_ksi / reference_rows, _variance(reference_ksi, reference_rows)
        within += weight * (ksi / rows - reference_share)
        within_variance += weight**2 * (_variance(ksi, rows) + reference_variance)
        # mix = sum of (weight - reference weight) x reference share: both samples' strata counts vary
        # (multinomially, about the overall share), and so does each reference share.
        spread = (reference_share - reference.ksi_share) ** 2
        mix_variance += (weight * spread / window.rows + reference_weight * spread / reference.rows
                         + (weight - reference_weight) ** 2 * reference_variance)  # fmt: skip
    mix = change - within

    adjusted_change = adjusted_z = None
    if window.adjusted_rows >= window.rows / 2 and reference.adjusted_rows >= reference.rows / 2:
        adjusted_change = window.adjusted_ksi_share - reference.adjusted_ksi_share
        adjusted_z = _z(adjusted_change, _variance(window.adjusted_ksi, window.adjusted_rows)
                        + _variance(reference.adjusted_ksi, reference.adjusted_rows))  # fmt: skip

    change_z, within_z, mix_z = _z(change, change_variance), _z(within, within_variance), _z(mix, mix_variance)
    if _counts(within, within_z) or _counts(adjusted_change, adjusted_z):
        verdict = "label drift"
    elif not _counts(change, change_z):
        verdict = "no change"
    elif _counts(mix, mix_z):
        verdict = "police-force mix" if by_force else "reporting change"
    else:
        verdict = "label drift"
    return LabelDrift(window, reference, by_force, change, change_z, mix, mix_z, within, within_z,
                      adjusted_change, adjusted_z, verdict, windows, tuple(notes))  # fmt: skip


def compare_window(scored: pd.DataFrame, reference: pd.DataFrame) -> LabelDrift:
    """A scored, labelled window (04_monitor's `scored`) against the model's reference sample."""
    return compare(LabelCounts.from_frame(scored), LabelCounts.from_frame(reference))


def pooled(windows: Sequence[Mapping[str, float]]) -> LabelDrift | None:
    """The comparison over several windows' stored `labels.*` metrics (one mapping per window, newest first,
    all of one model version, so of one reference sample); None when there are none."""
    if not windows:
        return None
    counts = [LabelCounts.from_metrics(values, _WINDOW) for values in windows]
    total = counts[0]
    for each in counts[1:]:
        total = total + each
    return compare(total, LabelCounts.from_metrics(windows[0], _REFERENCE), windows=len(windows))
