"""target-postgres with a faster load of Singer SDK BATCH files."""

__version__ = "0.2.0"
