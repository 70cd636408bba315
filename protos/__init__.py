"""The wire contract (package fedge.v1) and the Python generated from it."""
