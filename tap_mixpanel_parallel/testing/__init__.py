"""Test doubles shipped with the tap, so its tests and benchmarks never need a real Mixpanel."""
