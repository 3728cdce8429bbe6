"""What one notebook execution did (`RunResult`, the same facts as its `notebook_runs` row) and the
errors a caller sees: `NotebookFailed` from `raise_for_status`, `NotebookInterrupted` after an interruption."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


class NotebookError(Exception):
    """Base class of the executor's errors."""


@dataclass(frozen=True)
class RunResult:
    """What one execution did; the same facts as its `notebook_runs` row."""

    run_id: str
    notebook: str
    source: Path
    parameters: dict
    status: str
    started_at: datetime
    duration_s: float
    output_ipynb: Path | None
    output_html: Path | None
    failed_cell: int | None = None
    failed_line: str | None = None
    error_name: str | None = None
    error_value: str | None = None
    warnings: tuple[str, ...] = ()  # what went wrong around the run without failing it
    recorded: bool = field(default=True, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def describe(self) -> str:
        """One readable block: outcome, failing cell and error, and where the outputs are."""
        if self.ok:
            lines = [f"{self.notebook} succeeded in {self.duration_s:.1f} s."]
        else:
            what = {"failed": "failed", "timed_out": "timed out", "interrupted": "was interrupted"}[self.status]
            where = ""
            if self.failed_cell is not None:
                where = f" in cell {self.failed_cell} (`{self.failed_line}`)"
            lines = [
                f"{self.notebook} {what}{where} after {self.duration_s:.1f} s:",
                f"    {self.error_name}: {self.error_value}",
            ]
        if self.output_ipynb:
            lines.append(f"  executed notebook: {self.output_ipynb}")
        if self.output_html:
            lines.append(f"  HTML report:       {self.output_html}")
        lines += [f"  warning:           {warning}" for warning in self.warnings]
        table = "recorded in notebook_runs" if self.recorded else "not recorded"
        lines.append(f"  run id:            {self.run_id} ({table})")
        return "\n".join(lines)

    def raise_for_status(self) -> RunResult:
        """Raise NotebookFailed unless the run succeeded; return self to allow chaining."""
        if not self.ok:
            raise NotebookFailed(self)
        return self


class NotebookFailed(NotebookError):
    """Raised by `RunResult.raise_for_status` for a run that failed or timed out."""

    def __init__(self, result: RunResult):
        super().__init__(result.describe())
        self.result = result


class NotebookInterrupted(KeyboardInterrupt):
    """The run was interrupted; it is recorded, its partial notebook saved and its kernel stopped."""

    def __init__(self, result: RunResult):
        super().__init__(result.describe())
        self.result = result
