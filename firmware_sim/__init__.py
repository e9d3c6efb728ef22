"""Simulated vehicle hardware for the demo and tests: never imported by product code."""
