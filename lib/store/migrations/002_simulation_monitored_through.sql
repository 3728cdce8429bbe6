-- The simulation monitors on two kinds of days: the last day of each window (drift, and the
-- retraining decision) and the day a monitored window's labels have all arrived (its quality, and
-- the decision again). This is the last such day the simulation has processed.
ALTER TABLE simulation_state ADD COLUMN monitored_through date;
