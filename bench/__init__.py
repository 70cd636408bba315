"""Benchmarks: each prints a table and writes JSON; fedge against Flower on the same work."""
