-- Observed against expected KSI collisions per place (local highway authority, or latitude/longitude grid
-- cell) over the latest labelled windows: a snapshot per simulated day on which labels landed, written by
-- 04_monitor (lib/monitoring/places.py). The dashboards show the latest snapshot.
CREATE TABLE place_risk (
    known_at          date        NOT NULL,  -- simulated date by which every label pooled had arrived
    period_start      date        NOT NULL,  -- first day of the pooled windows
    period_end        date        NOT NULL,  -- last day of the pooled windows
    windows           integer     NOT NULL,
    model_versions    text        NOT NULL,  -- the versions that scored them, comma-separated
    grid_degrees      double precision NOT NULL,  -- the grid's cell size in latitude and longitude
    min_expected      double precision NOT NULL,  -- places expecting fewer KSI collisions are not ranked
    level             text        NOT NULL CHECK (level IN ('local_authority', 'grid')),
    place             text        NOT NULL,  -- ONS code of the authority, or the cell's centre "lat,lon"
    name              text        NOT NULL,
    latitude          double precision,      -- where the dashboards draw it
    longitude         double precision,
    collisions        integer     NOT NULL,
    observed          integer     NOT NULL,  -- KSI collisions
    expected          double precision NOT NULL,  -- sum of P(KSI)
    excess            double precision NOT NULL,  -- observed - expected, with a 95% interval
    excess_low        double precision NOT NULL,
    excess_high       double precision NOT NULL,
    shrunk_ratio      double precision NOT NULL,  -- empirical-Bayes observed/expected, with a 95% interval
    shrunk_ratio_low  double precision NOT NULL,
    shrunk_ratio_high double precision NOT NULL,
    shrunk_excess     double precision NOT NULL,  -- (shrunk_ratio - 1) x expected: what the places are ranked by
    prior_strength    double precision NOT NULL,
    rank              integer,               -- NULL: too few expected KSI collisions to rank
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (known_at, level, place)
);
