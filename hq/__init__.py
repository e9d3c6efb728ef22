"""Headquarters: ingest from the fleet, record vault, fleet dashboard."""
