"""The dashboard's long analyses as tasks (filled in by issue 26)."""
