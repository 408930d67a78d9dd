"""Executes plans and read-only inspections through injected ports."""
