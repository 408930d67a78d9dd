"""Pure model: snapshots of a cluster, parsed once and immutable. Stdlib only."""
