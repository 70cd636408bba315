"""A simulated device: a real client Daemon under the conditions a scenario gives it.

A ClientSpec is everything one simulated client needs, as plain JSON values, so that a
thread, a worker process (``python -m simulations.host``) or a Ray actor can build the
same device. The conditions act where a real device would suffer them: a dropped-out
device goes silent until the round's deadline, a straggler is late, a late joiner
connects only once the server has committed an earlier round, a leaver disconnects, a
capped link paces every chunk of the model download and the update upload.
Nothing here is reachable from ``fedge client``: a simulated device is a plain Daemon
given a channel factory (the capped link) and a TRAIN handler that wraps the daemon's
own (dropouts, stragglers, leavers), through the daemon's public extension points.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from fedge.client.channel import open_channel
from fedge.client.daemon import Daemon
from fedge.client.data import LocalData
from fedge.client.session import Session
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.simulations.hostile import Attack, HostileTrainer
from fedge.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientSpec:
    """One simulated client, as JSON-able values.

    dropout: probability, per round, that the device goes silent after being sampled.
    delay, delay_s: a straggler's delay distribution ("" none, exponential, uniform
    (0 to 2 * delay_s) or fixed) and its mean, waited before each update.
    slowdown: k >= 1: the device trains k times slower (each training is followed by a
    wait of k - 1 times its own length, before its update is sent).
    join_round: 0, or the round the device arrives for: it connects once round
    join_round - 1 is committed (the round opening at that moment may go without it);
    leave_round: 0, or the round after which it leaves.
    attack: "", or the Attack kind its updates suffer (with attack_factor).
    bandwidth_kbps: 0, or the cap of its link in kilobits/s, each direction.
    watch_token: an operator token a late joiner reads the server's progress with.
    personalize_epochs, personalize: the device personalizes the final model (0: not).
    """

    index: int
    device_id: str
    server: str
    task: str
    data: str
    token: str
    trust_key: str = ""
    model_dir: str = ""
    seed: int = 0
    dropout: float = 0.0
    delay: str = ""
    delay_s: float = 0.0
    slowdown: float = 1.0
    join_round: int = 0
    leave_round: int = 0
    attack: str = ""
    attack_factor: float = 4.0
    bandwidth_kbps: float = 0.0
    flower_client: str = ""
    num_clients: int = 0
    watch_token: str = ""
    personalize_epochs: int = 0
    personalize: str = "head"

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ClientSpec:
        """A spec from a JSON object, naming an unknown key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise FedgeError(f"client spec: unknown key {unknown[0]!r}")
        return cls(**values)


class Throttle(grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Paces the model download (server stream) and the update upload (client stream) to
    bytes_per_s each way, as a link of that capacity would."""

    def __init__(self, bytes_per_s: float, sleep: Callable[[float], Any] = time.sleep) -> None:
        self.rate = bytes_per_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._free = {"down": 0.0, "up": 0.0}  # when each direction's link is idle again

    def _pace(self, direction: str, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free[direction])
            self._free[direction] = start + nbytes / self.rate
            wait = self._free[direction] - now
        self._sleep(wait)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        replies = continuation(details, request)

        def paced() -> Iterator[Any]:
            for reply in replies:
                self._pace("down", wire_size(reply))
                yield reply

        return paced()

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        def paced() -> Iterator[Any]:
            for request in requests:
                self._pace("up", wire_size(request))
                yield request

        return continuation(details, paced())


def wire_size(message: Any) -> int:
    """A message's bytes on the wire: a protobuf message, or one already serialized (the
    daemon sends its update chunks as bytes: fedge.chunk_wire)."""
    if isinstance(message, bytes | bytearray | memoryview):
        return len(message)
    return int(message.ByteSize())


def slow_down(trainer: Any, factor: float, wait: Callable[[float], Any]) -> None:
    """Makes trainer's train and gradient take factor times as long: each call is
    followed by wait((factor - 1) x its own length), as on a device factor times slower."""
    for name in ("train", "gradient"):
        method = getattr(trainer, name, None)
        if method is not None:
            setattr(trainer, name, _slowed(method, factor, wait))


def _slowed(method: Callable[..., Any], factor: float,
            wait: Callable[[float], Any]) -> Callable[..., Any]:
    """method, followed by wait((factor - 1) x the call's own length)."""
    def slow(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = method(*args, **kwargs)
        wait((factor - 1) * (time.perf_counter() - started))
        return result

    return slow


class SimulatedDaemon(Daemon):
    """A Daemon that drops out, straggles, joins late, leaves or has a capped link as
    its ClientSpec says."""

    def __init__(self, config: ClientConfig, task: Task, trainer: Trainer,
                 data: LocalData | None, spec: ClientSpec) -> None:
        super().__init__(config, task, trainer, data, channel_factory=self._channel)
        self.spec = spec
        self.dropped_rounds: list[int] = []
        self.delay_seconds = 0.0
        self._attempts: dict[int, int] = {}  # TRAIN tasks taken, by round
        self._train_as_a_device = self.handle(fedge_pb2.TRAIN, self._train_as_scenario_says)
        if spec.slowdown > 1 and trainer is not None:
            slow_down(trainer, spec.slowdown, self.pause)

    def run(self) -> Any:
        """Waits for its join round (a late joiner), then runs as a device does."""
        if self.spec.join_round > 1:
            self._wait_for_round(self.spec.join_round - 1)
        if self.stopping:
            return self.stats
        return super().run()

    def _channel(self, config: ClientConfig) -> grpc.Channel:
        """The device's channel, through a capped link if the spec gives one."""
        channel = open_channel(config)
        if self.spec.bandwidth_kbps > 0:
            # Paced with wait(): a stopping device's transfers end at once.
            channel = grpc.intercept_channel(channel, Throttle(
                self.spec.bandwidth_kbps * 1000 / 8, self.wait))
        return channel

    def _train_as_scenario_says(self, session: Session, task: fedge_pb2.Task) -> None:
        # A round retried with a new sample draws afresh (else the same devices would
        # drop out of every retry); the draws stay reproducible from the seed.
        attempt = self._attempts[task.round] = self._attempts.get(task.round, 0) + 1
        rng = random.Random(f"{self.spec.seed}:{self.spec.device_id}:{task.round}:{attempt}")
        if rng.random() < self.spec.dropout:
            # Silent until the round is over: the server sees a sampled device that
            # never reports, exactly as when a phone goes out of coverage.
            log.info("%s: round %d: dropping out", self.config.device_id, task.round)
            self.dropped_rounds.append(task.round)
            self.pause(max(0.0, task.deadline_unix - time.time()) + 0.1)
            return
        if self.spec.delay:
            delay = self._delay(rng)
            self.delay_seconds += delay
            self.pause(delay)
        assert self._train_as_a_device is not None  # the daemon's own TRAIN handler
        self._train_as_a_device(session, task)
        if self.spec.leave_round and task.round >= self.spec.leave_round:
            log.info("%s: leaving after round %d", self.config.device_id, task.round)
            self.stop()

    def _delay(self, rng: random.Random) -> float:
        mean = self.spec.delay_s
        if self.spec.delay == "exponential":
            return rng.expovariate(1.0 / mean) if mean > 0 else 0.0
        if self.spec.delay == "uniform":
            return rng.uniform(0.0, 2.0 * mean)
        return mean

    def _wait_for_round(self, round_: int) -> None:
        """Waits (reading the server's Status as an operator) until round_ is committed
        (a retried round does not let the device in early)."""
        watch = dataclasses.replace(self.config, token=self.spec.watch_token)
        with open_channel(watch) as channel:
            stub = fedge_pb2_grpc.FederationStub(channel)
            while not self.stopping:
                try:
                    reply = stub.Status(fedge_pb2.StatusRequest(last_rounds=1), timeout=10)
                    if reply.model_version >= round_ or reply.phase == "done":
                        log.info("%s: joining after round %d", self.config.device_id,
                                 reply.model_version)
                        return
                except grpc.RpcError as exc:
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise FedgeError(f"{self.config.device_id} cannot read the server's "
                                         f"progress: {exc.code().name}: {exc.details()}"
                                         ) from exc
                self.wait(0.1)


def build_daemon(spec: ClientSpec, task: Task) -> SimulatedDaemon:
    """The simulated device of spec, with its partition read the way `fedge client`
    reads local data."""
    config = ClientConfig(
        server=spec.server, task=spec.task, data=(spec.data,), device_id=spec.device_id,
        insecure=True, backoff_initial_s=0.1, backoff_max_s=2.0, token=spec.token,
        trust_key=spec.trust_key, model_dir=spec.model_dir,
        personalize_epochs=0 if spec.attack else spec.personalize_epochs,
        personalize=spec.personalize)
    data = LocalData(config.data, task.schema)
    data.rescan()
    x, y = data.arrays()
    if len(y) == 0:
        raise FedgeError(f"{spec.device_id} found no usable examples in {spec.data}")
    if spec.flower_client:
        return _flower_daemon(spec, task, config, data, x, y)
    trainer = (Trainer(task, x, y, config.device) if not spec.attack else HostileTrainer(
        task, x, y, config.device, attack=Attack(spec.attack, spec.attack_factor),
        seed=spec.seed + spec.index))
    return SimulatedDaemon(config, task, trainer, data, spec)


def _flower_daemon(spec: ClientSpec, task: Task, config: ClientConfig, data: LocalData,
                   x: np.ndarray, y: np.ndarray) -> SimulatedDaemon:
    """The simulated device whose trainer is a Flower client (fedge/flower/client.py),
    its node_config the one run_simulation gives node spec.index."""
    from fedge.flower.client import FlowerTrainer, load_flower_client

    node = {"partition-id": spec.index, "num-partitions": spec.num_clients}
    trainer = FlowerTrainer(task, load_flower_client(spec.flower_client, node, spec.index),
                            x, y)
    daemon = SimulatedDaemon(config, task, trainer, data, spec)
    trainer.attach(daemon)
    return daemon
