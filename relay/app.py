"""Assembles and runs a relay: a server toward its devices, one device toward upstream.

The server side is fedge.server.app.FedgeServer with the relay's round driver
(fedge.relay.rounds.RelayRounds) and no strategy, commit or edge build of its own; the
upstream side is a client daemon (fedge.client.daemon.Daemon) with the relay's TRAIN and
DEPLOY handlers (fedge.relay.uplink). The daemon joins once the relay's first devices
have joined, declaring their examples, and runs until the upstream says STOP; the relay's
devices are then told STOP too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fedge.client.channel import ChannelFactory, open_channel
from fedge.client.daemon import Daemon
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig
from fedge.config.relay import RelayConfig
from fedge.errors import FedgeError
from fedge.relay.edge_cache import EdgeCache
from fedge.relay.rounds import PassThrough, RelayRounds
from fedge.relay.uplink import Uplink
from fedge.server.app import FedgeServer
from fedge.tasks import Task
from fedge.tensors import fingerprint
from fedge.threads import join_interruptibly

log = logging.getLogger(__name__)

# A relay runs until its upstream says STOP: it never ends a run on its own count.
UNBOUNDED_ROUNDS = 1 << 40


class Below(Trainer):
    """The upstream daemon's view of the relay's devices, as its "trainer": the model it
    fingerprints at Join and the examples it declares (those of the devices connected
    now). The relay's TRAIN handler runs a round below instead of training."""

    def __init__(self, task: Task, rounds: RelayRounds) -> None:
        # Not Trainer.__init__: it warms up an optimizer (seconds of imports) for
        # training a relay never does.
        import torch

        self.task = task
        self.device = torch.device("cpu")
        self.precision = None  # it trains nothing: announced as a plain CPU
        self.model = task.build_model()
        self.x = torch.zeros((0, *task.schema.input_shape))
        self.y = torch.zeros(0, dtype=torch.int64)
        self._rounds = rounds

    @property
    def num_examples(self) -> int:
        """The examples of the trainable devices connected to the relay now."""
        return self._rounds.live_examples()


def server_config(config: RelayConfig) -> ServerConfig:
    """The settings of the relay's server side (the devices' server)."""
    return ServerConfig(
        task=config.task, host=config.host, port=config.port, rounds=UNBOUNDED_ROUNDS,
        min_clients=config.min_clients, fraction=config.fraction, seed=config.seed,
        state_dir=config.state_dir, insecure=config.insecure, tls_cert=config.tls_cert,
        tls_key=config.tls_key, tls_client_ca=config.tls_client_ca,
        allow_anonymous=config.allow_anonymous, poll_seconds=config.poll_seconds,
        encoding=config.encoding, examples_factor=config.examples_factor,
        norm_factor=config.norm_factor, max_update_norm=config.max_update_norm,
        metrics_port=config.metrics_port, max_workers=config.max_workers, edge=False,
        linger_s=10.0)


def upstream_config(config: RelayConfig) -> ClientConfig:
    """The settings of the relay's upstream side (one device)."""
    return ClientConfig(
        server=config.upstream, task=config.task, device_id=config.relay_id,
        insecure=config.upstream_insecure, tls_ca=config.upstream_tls_ca,
        token=config.upstream_token, device="cpu", poll_seconds=config.poll_seconds)


class Relay:
    """One relay: start() serves devices and links upstream, wait() blocks to the end."""

    def __init__(self, config: RelayConfig,
                 channel_factory: ChannelFactory = open_channel) -> None:
        self.config = config
        self.server = FedgeServer(server_config(config), rounds_type=RelayRounds)
        rounds = self.server.rounds
        if not isinstance(rounds, RelayRounds):
            raise TypeError("the relay's server must run RelayRounds")
        self.rounds = rounds
        rounds.strategy = PassThrough()
        self.edge: EdgeCache | None = None
        if config.edge:
            self.edge = EdgeCache(config.state_dir, on_ready=rounds.wake)
            rounds.deploy = self.edge
        task = self.server.task
        self.daemon = Daemon(upstream_config(config), task, Below(task, rounds),
                             channel_factory=channel_factory)
        specs = fingerprint(rounds.global_model)
        self.uplink = Uplink(self.daemon, rounds, specs, config.upstream_margin_s, self.edge)
        self.error = ""
        # Called (from the uplink thread) once the upstream link has ended, failed or not.
        self.on_exit: Callable[[Relay], None] | None = None
        self._thread = threading.Thread(target=self._link, name="uplink", daemon=True)
        self._stopped = threading.Event()  # stop() called here: not the run's end
        self.port = 0

    def start(self) -> int:
        """Serves devices (port 0 picks a free one); links upstream once they join."""
        self.port = self.server.start()
        self._thread.start()
        return self.port

    def _link(self) -> None:
        wanted = self.config.start_clients or self.config.min_clients
        live = self.rounds.wait_for_devices(wanted, self.config.join_wait_s)
        reason = ""
        if not self.rounds.stopping:
            log.info("relay %s: %d device(s) connected; joining upstream %s",
                     self.config.relay_id, live, self.config.upstream)
            try:
                self.daemon.run()
            except FedgeError as exc:
                reason = str(exc)
            except Exception as exc:  # the relay's run ends; its devices are told why
                log.exception("the relay's upstream link failed")
                reason = f"{type(exc).__name__}: {exc}"
        self.error = reason
        # A relay stopped here (a restart, Ctrl-C) leaves its devices' run open: they
        # see it go away and reconnect, where STOP would have ended their daemons.
        if not self._stopped.is_set():
            self.rounds.finish(f"the relay's upstream link failed: {reason}" if reason
                               else "")
        if self.on_exit is not None:
            self.on_exit(self)

    def wait(self, timeout: float | None = None) -> None:
        """Blocks until the upstream run is over (or stop()) and the devices are told
        STOP, then shuts the relay down."""
        if not join_interruptibly(self._thread, timeout):
            raise TimeoutError(f"the relay did not finish within {timeout} s")
        self.server.wait(timeout)

    def stop(self) -> None:
        """Leaves the upstream and stops serving (wait() then returns); its devices are
        not told to stop."""
        self._stopped.set()
        self.daemon.stop()
        self.server.stop()
