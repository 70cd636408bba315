"""The device's local data: sources on disk (directories, files, globs) in CSV, NumPy,
JSON Lines or image folders, read and checked against the task schema; what does not fit
is skipped with a counted reason, and a rescan picks up new files."""

from fedge.client.data.schema import ReadOptions
from fedge.client.data.sources import LocalData, inspect_sources, load_local_data

__all__ = ["LocalData", "ReadOptions", "inspect_sources", "load_local_data"]
