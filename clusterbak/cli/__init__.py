"""The typer app: thin commands, one renderer."""
