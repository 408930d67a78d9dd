"""A local lab cluster of redis-server processes on loopback, for the demo, drills and tests."""
