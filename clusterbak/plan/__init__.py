"""Pure planners: (Topology, states, Inventory, options) -> a JSON-able Plan.

A dry run prints the very Plan a run executes."""
