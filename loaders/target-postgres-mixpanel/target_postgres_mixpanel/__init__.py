"""target-postgres with a faster load of BATCH files."""
