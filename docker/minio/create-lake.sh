#!/bin/sh
# One-shot job of docker-compose (minio/mc image): create the lake bucket named by LAKE_URI and the
# account the project uses (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), so the code never holds
# MinIO's root credentials. Safe to run again: every step leaves an existing bucket or user as is.
# The mc image has no grep or sed: only shell built-ins and mc.
set -eu

case "$LAKE_URI" in
    s3://?*) ;;
    *) echo "LAKE_URI=$LAKE_URI: docker-compose keeps the lake in MinIO, so it must be s3://bucket[/prefix]" >&2
       exit 2 ;;
esac
bucket=${LAKE_URI#s3://}
bucket=${bucket%%/*}

mc alias set lake http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "lake/$bucket"
mc admin user add lake "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
# readwrite covers the lake and MLflow's artifacts (s3://<bucket>/.../mlflow-artifacts).
# mc since late 2024 treats an attachment that already exists as done.
mc admin policy attach lake readwrite --user "$AWS_ACCESS_KEY_ID"
echo "Lake bucket $bucket and user $AWS_ACCESS_KEY_ID are ready."
