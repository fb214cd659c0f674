"""Plans and their limits, quota decisions, threshold alerts and ingest rate limits."""
