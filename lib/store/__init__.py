"""Store: the PostgreSQL schema and every SQL statement on the project's tables."""
