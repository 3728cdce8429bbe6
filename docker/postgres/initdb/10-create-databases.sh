#!/usr/bin/env bash
# Runs once, when the postgres container starts on an empty volume (docker-entrypoint-initdb.d).
# Creates the two databases of the compose deployment, owned by POSTGRES_USER:
#   INFERENCE_DB  predictions, monitoring metrics, notebook runs (tables come from lib/migrations
#                 the first time the code connects)
#   MLFLOW_DB     MLflow's backend store
# and a read-only login for Grafana, GRAFANA_DB_USER, that may SELECT every table POSTGRES_USER
# creates in INFERENCE_DB, now or later (Grafana runs whatever SQL a dashboard holds).
set -euo pipefail

: "${POSTGRES_USER:?}" "${INFERENCE_DB:?}" "${MLFLOW_DB:?}" "${GRAFANA_DB_USER:?}" "${GRAFANA_DB_PASSWORD:?}"

as_owner() {
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" "$@"
}

for database in "$INFERENCE_DB" "$MLFLOW_DB"; do
    as_owner --dbname postgres --set=db="$database" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
done

as_owner --dbname "$INFERENCE_DB" --set=db="$INFERENCE_DB" --set=owner="$POSTGRES_USER" \
    --set=reader="$GRAFANA_DB_USER" --set=password="$GRAFANA_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'reader', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader')\gexec
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL

echo "Created databases $INFERENCE_DB and $MLFLOW_DB, and the read-only login $GRAFANA_DB_USER."
