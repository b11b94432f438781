"""Singer tap for Mixpanel raw events, exported in parallel date partitions."""

# The one place the version is written: the build reads it from here (pyproject.toml,
# [tool.hatch.version]) and the SDK's --version/--about read it back from the installed metadata.
__version__ = "0.1.0"
