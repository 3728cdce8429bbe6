-- Where each scored collision happened, so the dashboards (the plotly map and Grafana's geomap) draw
-- the latest window from PostgreSQL alone. A feature the model saw, never a label.
ALTER TABLE predictions ADD COLUMN latitude double precision, ADD COLUMN longitude double precision;
