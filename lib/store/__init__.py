"""Store: the PostgreSQL schema and every SQL statement on the project's tables, one module per table.

`db` opens connections and applies `migrations/`; `predictions`, `metrics`, `events`, `runs` and
`simulation_state` each answer the questions asked of their table, one function per question;
`dashboard_queries` holds the read-only queries that the dashboard and Grafana share. Everything
else asks these modules instead of writing SQL, and every value travels as a query parameter.
"""
