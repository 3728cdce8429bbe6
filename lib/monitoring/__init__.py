"""Monitoring: drift and quality per window, Evidently reports and the dashboard."""
