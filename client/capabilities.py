"""What a device tells the server about itself when it joins: accelerator, memory,
platform, runtime. The server picks the device's edge class from them (unless its
operator gave it one with --device-class)."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from fedge import __version__
from fedge.protos import fedge_pb2

if TYPE_CHECKING:
    from fedge.client.trainer import Trainer


def total_memory() -> int:
    """The machine's physical memory in bytes (0 where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX, or the name is unknown
        return 0


def capabilities(trainer: Trainer | None) -> fedge_pb2.Capabilities:
    """The Join message's capabilities of this device (trainer None: inference-only,
    and torch is not imported)."""
    if trainer is None:
        from fedge.client.inference import runtime_description

        return fedge_pb2.Capabilities(accelerator="none (inference only)",
                                      memory_bytes=total_memory(),
                                      platform=platform.platform(),
                                      runtime=runtime_description())
    from fedge.client.trainer import describe

    return fedge_pb2.Capabilities(accelerator=describe(trainer.device, trainer.precision),
                                  memory_bytes=total_memory(),
                                  platform=platform.platform(),
                                  runtime=f"fedge {__version__}")
