"""How clusterbak reaches the files and commands of a node's host."""
