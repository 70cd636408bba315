"""Runnable examples of using fedge: load one with ``--task examples.MODULE:task``."""
