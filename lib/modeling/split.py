"""The time split: train, then validation, then test, as consecutive date ranges.

Either by years (`split_by_years`), or, for retraining in the simulation, by what is labelled at a date
(`split_by_labels_known`): only collisions whose label has arrived (date + label delay <= that date)
are used; the last 90 labelled days are the test set, the 90 before validation, the rest training.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from lib.modeling.model import ModelInputError
from lib.modeling.model_run import TEST_RANGE_PARAM, VALIDATION_RANGE_PARAM

DEFAULT_VALIDATION_DAYS = 90
DEFAULT_TEST_DAYS = 90


@dataclass(frozen=True)
class Split:
    """Consecutive inclusive date ranges; `train_start` None means from the first collision in the data."""

    train_start: date | None
    train_end: date
    validation: tuple[date, date]
    test: tuple[date, date]
    rule: str

    def ranges(self) -> dict[str, tuple[date | None, date]]:
        return {"train": (self.train_start, self.train_end), "validation": self.validation, "test": self.test}

    def needs_year(self, year: int) -> bool:
        return (self.train_start is None or year >= self.train_start.year) and year <= self.test[1].year

    def apply(self, curated: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The train, validation and test rows of `curated` (by its `date` column)."""
        day = pd.to_datetime(curated["date"]).dt.normalize()
        parts = {}
        for part, (start, end) in self.ranges().items():
            inside = day <= pd.Timestamp(end)
            if start is not None:
                inside &= day >= pd.Timestamp(start)
            parts[part] = curated.loc[inside].reset_index(drop=True)
            if parts[part].empty:
                raise ModelInputError(
                    f"the {part} period {start or 'start'}..{end} holds no collision "
                    "in the curated data; ingest those years or change the split"
                )
        return parts

    def run_params(self, parts: dict[str, pd.DataFrame]) -> dict[str, str]:
        """The periods as MLflow run parameters, `first..last` (training from its first collision)."""
        train_start = self.train_start or pd.Timestamp(parts["train"]["date"].min()).date()
        return {
            "train_range": f"{train_start}..{self.train_end}",
            VALIDATION_RANGE_PARAM: f"{self.validation[0]}..{self.validation[1]}",
            TEST_RANGE_PARAM: f"{self.test[0]}..{self.test[1]}",
        }


def split_by_years(train_years: list[int] | tuple[int, ...], validation_year: int, test_year: int) -> Split:
    years = sorted(train_years)
    if not years:
        raise ModelInputError("train_years is empty")
    if years != list(range(years[0], years[-1] + 1)):
        raise ModelInputError(f"train_years {years} must be consecutive")
    if not years[-1] < validation_year < test_year:
        raise ModelInputError(
            f"the split must run forward in time: train {years[0]}-{years[-1]}, "
            f"then validation {validation_year}, then test {test_year}"
        )
    return Split(
        date(years[0], 1, 1),
        date(years[-1], 12, 31),
        (date(validation_year, 1, 1), date(validation_year, 12, 31)),
        (date(test_year, 1, 1), date(test_year, 12, 31)),
        rule=f"train {years[0]}-{years[-1]}, validate {validation_year}, test {test_year}",
    )


def split_by_labels_known(
    labels_known_by: date,
    label_delay_days: int,
    validation_days: int = DEFAULT_VALIDATION_DAYS,
    test_days: int = DEFAULT_TEST_DAYS,
) -> Split:
    """Only collisions labelled by `labels_known_by`: the last `test_days` of them test, the
    `validation_days` before validate, everything earlier trains."""
    last_labelled = labels_known_by - timedelta(days=label_delay_days)
    test = (last_labelled - timedelta(days=test_days - 1), last_labelled)
    validation = (test[0] - timedelta(days=validation_days), test[0] - timedelta(days=1))
    return Split(
        None,
        validation[0] - timedelta(days=1),
        validation,
        test,
        rule=(
            f"labels known by {labels_known_by} (delay {label_delay_days} days): "
            f"test {test[0]}..{test[1]}, validate {validation[0]}..{validation[1]}, train before"
        ),
    )
