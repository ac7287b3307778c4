"""Benchmarking on the board: latency protocol, energy meters (meters/), reports."""
