-- What went wrong around a run without failing it (its HTML copy not written, its executed notebook
-- not attached to its MLflow run), so the run index shows it instead of only a log line.
ALTER TABLE notebook_runs ADD COLUMN warnings text[] NOT NULL DEFAULT '{}';
