"""``fedge simulate --relays R``: R real relays (fedge.relay) between the server and the
clients, each serving a contiguous block of the clients over its own loopback port.

Each relay is enrolled with the server as a device and enrolls its own clients; its
seed is the run's, so every client shuffles as it would in a flat run, and a tree of
relays gives the flat run's model (FedAvg is associative). The report's ``relays`` block
says which clients each relay served, how many partial aggregates it sent and how many
model downloads served its clients, and the server's received bytes per round: the
flat run's divided by about the clients-per-relay factor.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from fedge.config import SimulateConfig
from fedge.config.relay import RelayConfig
from fedge.relay.app import Relay
from fedge.server.app import FedgeServer
from fedge.server.store import RoundRecord
from fedge.simulations.device import ClientSpec

log = logging.getLogger(__name__)


def blocks(clients: int, relays: int) -> list[range]:
    """Which clients each relay serves: contiguous blocks, sizes differing by one."""
    edges = [k * clients // relays for k in range(relays + 1)]
    return [range(edges[i], edges[i + 1]) for i in range(relays)]


class RelayTier:
    """The simulation's relays: started before the clients, stopped after the server."""

    def __init__(self, config: SimulateConfig, server: FedgeServer, host: str,
                 on_failure: Callable[[], None]) -> None:
        self.config = config
        self.blocks = blocks(config.clients, config.relays)
        self._host = host
        self._on_failure = on_failure
        self.relays: list[Relay] = []
        margin = min(5.0, 0.1 * config.round_timeout_s)
        tokens = server.tokens.create_many([f"relay-{i}" for i in range(config.relays)])
        for i, block in enumerate(self.blocks):
            self.relays.append(Relay(RelayConfig(
                task=config.task, host=host, port=0,
                state_dir=f"{config.out}/relays/relay-{i}", insecure=True,
                min_clients=1, start_clients=len(block),
                join_wait_s=config.round_timeout_s, fraction=config.fraction,
                seed=config.seed, poll_seconds=2.0, encoding=config.encoding,
                max_workers=max(256, len(block) + 64), edge=config.edge,
                upstream=f"127.0.0.1:{server.port}", relay_id=f"relay-{i}",
                upstream_token=tokens[i], upstream_insecure=True,
                upstream_margin_s=margin,
                # trusted clients, as the server's: plain FedAvg weights
                examples_factor=0.0, norm_factor=0.0)))

    def start(self) -> None:
        """Starts every relay (each joins the server once its clients have joined)."""
        for relay in self.relays:
            relay.on_exit = self._exited
            relay.start()

    def _exited(self, relay: Relay) -> None:
        if relay.error:  # a relay refused or cut off: the run cannot go on as asked
            log.error("relay %s failed: %s", relay.config.relay_id, relay.error)
            self._on_failure()

    def route(self, specs: list[ClientSpec], host: str) -> list[ClientSpec]:
        """The clients' specs pointed at their relays (on host), each enrolled there."""
        routed = list(specs)
        for relay, block in zip(self.relays, self.blocks, strict=True):
            ids = [specs[k].device_id for k in block]
            tokens = relay.server.tokens.create_many(ids)
            for k, token in zip(block, tokens, strict=True):
                routed[k] = dataclasses.replace(
                    specs[k], server=f"{host}:{relay.port}", token=token)
        return routed

    def stop(self, timeout: float = 30.0) -> None:
        """Stops every relay and waits for it (after the server's run is over)."""
        for relay in self.relays:
            relay.stop()
        for relay in self.relays:
            try:
                relay.wait(timeout)
            except TimeoutError:
                log.warning("relay %s did not stop within %g s", relay.config.relay_id,
                            timeout)

    @property
    def state_dirs(self) -> list[str]:
        """The relays' state directories (their devices' reports are kept there)."""
        return [r.config.state_dir for r in self.relays]

    @property
    def error(self) -> str:
        """The first relay's failure ("" when none failed)."""
        return next((f"relay {r.config.relay_id}: {r.error}" for r in self.relays
                     if r.error), "")

    def report(self, records: list[RoundRecord]) -> dict[str, Any]:
        """The report's ``relays`` block."""
        rounds = [r for r in records if r.round > 0]
        per_relay = self.config.clients / self.config.relays
        return {
            "count": self.config.relays,
            "clients_per_relay": round(per_relay, 3),
            "clients": [list(block) for block in self.blocks],
            "partials_sent": [r.uplink.partials for r in self.relays],
            "model_downloads": [r.uplink.downloads for r in self.relays],
            "upstream_bytes_per_round": [r.bytes_up for r in rounds],
            "upstream_updates_per_round": [r.clients for r in rounds],
        }
