-- The process that executes a run, so a later executor can tell a run still going from one whose
-- process died (kill -9, a lost database connection) and mark it interrupted instead of 'running'
-- for ever. Pids are only compared on the host that recorded them.
ALTER TABLE notebook_runs ADD COLUMN host text, ADD COLUMN pid integer, ADD COLUMN process_started double precision;
