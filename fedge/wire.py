"""The names fedge uses for the wire's enums, in one place.

Settings, config files, logs and the command line speak in these names
(``--update delta``, ``--encoding int8``); only the gRPC edge of the server and the
daemon turns them into the protobuf enum values, through the maps here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedge.protos import fedge_pb2

if TYPE_CHECKING:  # not imported at run time: it needs `cryptography`, the edge has none
    from fedge.secure.masks import Advert

# What a device sends: its new weights, their difference from the global model, or
# the gradient of its loss at the global model.
UPDATE_KINDS: dict[str, fedge_pb2.UpdateKind] = {
    "weights": fedge_pb2.WEIGHTS, "delta": fedge_pb2.DELTA, "gradient": fedge_pb2.GRADIENT}
# How an update's tensors travel (see fedge.encodings).
ENCODINGS: dict[str, fedge_pb2.Encoding] = {
    "f32": fedge_pb2.F32, "f16": fedge_pb2.F16, "int8": fedge_pb2.INT8, "topk": fedge_pb2.TOPK}
UPDATE_KIND_NAMES = tuple(UPDATE_KINDS)
ENCODING_NAMES = tuple(ENCODINGS)


def enum_name(enum: Any, value: int) -> str:
    """An enum value's name, or the number for values this build does not know."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return f"unknown value {value}"


def advert_message(advert: Advert) -> fedge_pb2.SecureAdvert:
    """A secure round's advert (fedge.secure.masks.Advert) as polls and tasks carry it."""
    return fedge_pb2.SecureAdvert(device_id=advert.device_id,
                                  encrypt_public=advert.encrypt_public,
                                  mask_public=advert.mask_public, mask_prg=advert.mask_prg)
