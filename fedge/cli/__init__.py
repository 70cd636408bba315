"""The composition root: the ``fedge`` command, one module per command group (server,
client, tokens, status, data, simulate, edge). Only this package imports every room."""

from fedge.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
