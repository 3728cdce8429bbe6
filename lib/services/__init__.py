"""Services: the embedded PostgreSQL, S3 (SeaweedFS) and MLflow servers that `make up` runs from PyPI wheels,
and the stack that starts, checks and stops them together."""
