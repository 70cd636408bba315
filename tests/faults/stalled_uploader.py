"""A device process that starts its update and stalls mid-stream, to be SIGKILLed.

Run as ``python -m tests.faults.stalled_uploader PORT TOKEN``; prints "uploading" once
part of its update is on the wire. Needs no torch: it resends the global model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from fedge.protos import fedge_pb2
from fedge.tensors import from_blob
from tests.faults.rawdevice import RawDevice


def main() -> None:
    device = RawDevice(int(sys.argv[1]), "doomed", sys.argv[2])
    device.join()
    task = device.poll_train(tries=60)
    arrays, _ = from_blob(device.fetch(task.model_version))
    stream = device.stream(task, arrays)

    def stalled() -> Iterator[fedge_pb2.UpdateChunk]:
        yield from stream[:2]
        print("uploading", flush=True)
        time.sleep(3600)
        yield from stream[2:]

    device.submit(stalled())


if __name__ == "__main__":
    main()
