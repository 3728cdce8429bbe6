-- Tables shared by the notebooks, the runner and the dashboards.

-- One row per collision and model version. A window rerun replaces its rows.
CREATE TABLE predictions (
    collision_index  text        NOT NULL,
    model_version    text        NOT NULL,
    collision_date   date        NOT NULL,
    window_start     date        NOT NULL,
    window_end       date        NOT NULL,
    p_fatal          double precision NOT NULL,
    p_serious        double precision NOT NULL,
    p_slight         double precision NOT NULL,
    p_ksi            double precision NOT NULL,
    predicted_severity smallint  NOT NULL CHECK (predicted_severity IN (1, 2, 3)),
    ksi_alert        boolean     NOT NULL,
    alert_threshold  double precision NOT NULL,
    scored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collision_index, model_version)
);
CREATE INDEX predictions_collision_date ON predictions (collision_date);

-- Long format: one scalar per window, model version and metric. Recomputing a window replaces its rows.
CREATE TABLE monitoring_metrics (
    window_start   date        NOT NULL,
    window_end     date        NOT NULL,
    model_version  text        NOT NULL,
    metric         text        NOT NULL,
    value          double precision,
    known_at       date,        -- simulated date from which the value could be computed (labels arrived)
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, window_end, model_version, metric)
);
CREATE INDEX monitoring_metrics_metric ON monitoring_metrics (metric, window_start);

-- Every notebook execution, failures included.
CREATE TABLE notebook_runs (
    run_id         text        PRIMARY KEY,
    notebook       text        NOT NULL,
    parameters     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status         text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_s     double precision,
    output_ipynb   text,
    output_html    text,
    failed_cell    integer,
    error_name     text,
    error_value    text
);
CREATE INDEX notebook_runs_started ON notebook_runs (started_at DESC);

-- How far the simulation has processed; one row per simulation (name 'default').
CREATE TABLE simulation_state (
    name                  text        PRIMARY KEY,
    started_at            timestamptz NOT NULL,      -- real time the simulated clock started
    start_date            date        NOT NULL,      -- SIMULATION_START_DATE at that time
    seconds_per_day       double precision NOT NULL,
    last_inferred_date    date,                      -- last simulated day scored by 03_infer
    last_monitored_end    date,                      -- end of the last window monitored by 04_monitor
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Promotions and retraining decisions, with the numbers that decided them.
CREATE TABLE model_events (
    id             bigserial   PRIMARY KEY,
    event          text        NOT NULL,   -- promoted, not_promoted, retraining_recommended, retraining_not_needed, retrained
    model_name     text        NOT NULL,
    model_version  text,
    details        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    simulated_date date,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_events_created ON model_events (created_at DESC);
