"""Modeling: features to candidates, time splits, evaluation, the registry, scoring and serving."""
