"""The device's local data: sources on disk, read and checked against the task schema."""

from client.data.sources import load_local_data

__all__ = ["load_local_data"]
