"""The daemon's line to the server: a gRPC channel, over TLS unless told otherwise,
that carries the device token on every call; and what a failed call means.

``open_channel`` is the default ``ChannelFactory``. A ``Daemon`` takes another one to
change the link without touching the loop: ``fedge.simulations.device`` wraps it to cap
a simulated device's bandwidth.

A refused call carries the refusal's name in its trailing metadata (``fedge-refusal``,
see ``fedge.refusals``); ``refusal_of`` reads it back with the rule that says whether
the daemon may send the same request again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fedge.config import ClientConfig
from fedge.refusals import METADATA_KEY, RULES, Rule, rule_for
from fedge.tensors import CHUNK_BYTES
from fedge.tls import channel_credentials

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
                   ("grpc.max_send_message_length", 4 * CHUNK_BYTES)]

ChannelFactory = Callable[[ClientConfig], grpc.Channel]
"""Makes the channel a daemon talks over, from its configuration."""


class TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the device token to every call, so no call site can forget it."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """A unary call, with the token."""
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """A server-streaming call, with the token."""
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        """A client-streaming call, with the token."""
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        """A bidirectional call, with the token."""
        return continuation(self._with_token(details), requests)


def channel_options(config: ClientConfig) -> list[tuple[str, int]]:
    """CHANNEL_OPTIONS plus gRPC's own reconnect backoff held to the daemon's: gRPC's
    defaults (1 s growing 1.6x up to 120 s) kept a device away for 17-20 s after a
    server restart whatever --backoff-max-s said."""
    return [*CHANNEL_OPTIONS,
            ("grpc.initial_reconnect_backoff_ms",
             max(1, int(min(config.backoff_initial_s, config.backoff_max_s) * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(config.backoff_max_s * 1000)))]


def open_channel(config: ClientConfig) -> grpc.Channel:
    """A channel to config.server, over TLS unless config.insecure, carrying the device
    token (if any) on every call."""
    options = channel_options(config)
    if config.insecure:
        channel = grpc.insecure_channel(config.server, options=options)
    else:
        credentials = channel_credentials(config.tls_ca, config.tls_cert, config.tls_key)
        channel = grpc.secure_channel(config.server, credentials, options=options)
    if config.token:
        # grpc's interceptor classes use tuple-based call details; ours only add metadata.
        channel = grpc.intercept_channel(channel, TokenMetadata(config.token))
    return channel


# Status codes that say the server is away, overloaded or cut the call, whatever
# refusal name came with them: the daemon backs off and tries again, never exits.
TRANSIENT = frozenset({"CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
                       "ABORTED"})


@dataclass(frozen=True)
class Refusal:
    """A failed call as the daemon acts on it.

    code: the gRPC status code's name; name: the server's refusal name ("" when it sent
    none: an older server, or a status from gRPC itself); rule: its row of the table.
    """

    code: str
    name: str
    details: str
    rule: Rule

    @property
    def needs_new_session(self) -> bool:
        """The server does not know the session: only joining again helps."""
        return self.rule == RULES["unknown_session"]

    @property
    def stale(self) -> bool:
        """The round or task is not open any more: nothing wrong with what was sent."""
        return self.rule == RULES["stale"]

    @property
    def transient(self) -> bool:
        """The server is away, overloaded, or cut the call: never a reason to stop."""
        return self.code in TRANSIENT

    @property
    def resend(self) -> bool:
        """The same request may be sent again, on the same session, after a backoff."""
        return self.rule.retry and not self.needs_new_session

    def __str__(self) -> str:
        return f"{self.name or self.code.lower()}: {self.details}"


def refusal_of(exc: grpc.RpcError) -> Refusal:
    """What a failed call's status and trailing metadata say."""
    code_of = getattr(exc, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    trailing = getattr(exc, "trailing_metadata", None)
    metadata = (trailing() if callable(trailing) else None) or ()
    name = next((str(value) for key, value in metadata if key == METADATA_KEY), "")
    details_of = getattr(exc, "details", None)
    details = (details_of() if callable(details_of) else None) or str(exc)
    return Refusal(code.name, name, details, rule_for(code.name, name))


# A TLS problem fails every handshake the same way; a server that is away does not
# stay away with the same handshake error. After this many identical failures in a
# row (a few seconds of backoff) the daemon stops and says what is wrong.
TLS_FAILURES_TO_STOP = 3


def tls_problem(config: ClientConfig, refusal: Refusal, joined: bool) -> str | None:
    """What a failed call says about a TLS misconfiguration, in words a person can act
    on; None when it looks like anything else (a server away, busy, restarting).

    joined: the daemon has joined this server before; a plaintext channel that the
    server closes is only taken for a TLS server before that.
    """
    details = refusal.details
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (f"TLS: the certificate of server {config.server} is not signed by the CA "
                f"in --tls-ca {config.tls_ca} (CERTIFICATE_VERIFY_FAILED); give the CA "
                "that issued the server's certificate")
    if "handshake failed" in details.lower() or "SSL_ERROR" in details:
        return (f"TLS: the handshake with server {config.server} fails ({details[-160:]}); "
                "check --tls-ca, and --tls-cert/--tls-key where the server asks for a "
                "client certificate")
    if config.insecure and not joined and "Socket closed" in details:
        return (f"TLS: server {config.server} closes plaintext connections: it serves TLS; "
                "drop --insecure and give --tls-ca with the CA that issued its certificate")
    return None
