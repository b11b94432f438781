"""What one run shares between its stream families: statuses, the throttle rule, state
errors, text sanitising, date ranges and spool files.

``export`` (raw events) and ``query`` (the Query, Engage and App API streams) both build on
this package and never import each other (an import-linter contract in pyproject.toml checks
it), so either can change without reaching into the other.
"""
