"""clusterbak: backups, restores, drills and rolling restarts for Redis Cluster."""

__version__ = "0.1.0"
