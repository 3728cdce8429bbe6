"""A STATS19 file's rows as Arrow columns (`RawTable`), and their pandas form.

`lib.data.stats19` reads a file into a `RawTable`, `lib.data.validate` checks and repairs three of them
and `lib.data.curated` builds the curated table from them, all in Arrow and numpy: ingestion
(`lib.data.ingest`) goes from the CSV to the parquet file without building a DataFrame, which saved
a copy of every table and a fifth of the peak memory (BENCHMARKS.md, "Ingestion"). pyarrow itself
still imports pandas when it is installed, the first time it converts a Python or numpy value.
Notebooks, tests and `lib.data.synth` hold DataFrames: `to_frame` and `from_frame` convert, keeping the
file, table and column lists in `DataFrame.attrs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RawTable:
    """One table's rows in canonical columns (`lib.data.schema`), plus `source_line` when read from a file."""

    rows: pa.Table
    file: str  # named in errors and findings
    table: str  # "collision", "vehicle" or "casualty"
    absent_columns: list[str] = field(default_factory=list)  # not in this era's file: filled as missing
    dropped_columns: list[str] = field(default_factory=list)  # in the file, outside the schema
    repaired: set[str] = field(default_factory=set)  # columns that validation replaced

    def __len__(self) -> int:
        return self.rows.num_rows

    def __contains__(self, column: str) -> bool:
        return column in self.rows.column_names

    def __getitem__(self, column: str) -> pa.ChunkedArray:
        return self.rows.column(column)

    @property
    def columns(self) -> list[str]:
        return self.rows.column_names

    def replace(self, column: str, values: pa.Array | pa.ChunkedArray) -> None:
        """Swap in a repaired column (same name and place)."""
        self.rows = self.rows.set_column(self.rows.column_names.index(column), column, values)
        self.repaired.add(column)

    def first_values(self, column: str, mask: np.ndarray, limit: int) -> list:
        """The first `limit` values of `column` where `mask` holds, as Python values."""
        return self[column].take(np.flatnonzero(mask)[:limit]).to_pylist()


def to_frame(raw: RawTable) -> pd.DataFrame:
    """The DataFrame that `lib.data.stats19.read_table` returns: text as pyarrow-backed strings, attrs filled."""
    import pandas as pd

    # pyarrow builds pandas' 2-D blocks itself (fast), and they are writable copies, not views of Arrow memory
    frame = raw.rows.to_pandas(types_mapper=lambda arrow_type: pd.StringDtype("pyarrow")
                               if arrow_type == pa.string() else None)  # fmt: skip
    frame.attrs.update(source_file=raw.file, table=raw.table, absent_columns=list(raw.absent_columns),
                       dropped_columns=list(raw.dropped_columns))  # fmt: skip
    return frame


def from_frame(frame: pd.DataFrame, table: str) -> RawTable:
    """A DataFrame of canonical columns (read, synthetic or edited) as a `RawTable`; `table` unless attrs say."""
    rows = pa.Table.from_pandas(frame, preserve_index=False)
    # all-missing text is typed null, pandas' own strings may be large_string: Arrow's kernels want one type
    for position, column in enumerate(rows.schema):
        if pa.types.is_null(column.type) or pa.types.is_large_string(column.type):
            rows = rows.set_column(position, column.name, rows.column(position).cast(pa.string()))
    attrs = frame.attrs
    table = attrs.get("table", table)
    return RawTable(rows, attrs.get("source_file", table), table, list(attrs.get("absent_columns") or []),
                    list(attrs.get("dropped_columns") or []))  # fmt: skip
