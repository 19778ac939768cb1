"""Running Gatehouse in production: health checks, metrics, structured logs, retention, backups."""
