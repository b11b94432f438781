"""Singer tap for Mixpanel raw events, exported in parallel date partitions."""
