"""Channel credentials from PEM files, for every gRPC client fedge opens (the daemon's
channel and the operator's `fedge status --server`)."""

from __future__ import annotations

from pathlib import Path

import grpc

from fedge.errors import FedgeError


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS credentials trusting the CA in ``ca``, with a client certificate (mTLS) when
    ``cert`` and ``key`` are given; unreadable files are one FedgeError naming them."""
    try:
        root = Path(ca).read_bytes()
        private_key = Path(key).read_bytes() if key else None
        chain = Path(cert).read_bytes() if cert else None
    except OSError as exc:
        raise FedgeError(f"cannot read the TLS CA or client certificate: {exc}") from None
    return grpc.ssl_channel_credentials(root, private_key=private_key, certificate_chain=chain)
