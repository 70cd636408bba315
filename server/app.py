"""Assembles and runs the server: task, state store, round driver and gRPC service."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedge.config import ServerConfig
from fedge.errors import FedgeError
from fedge.server.admission import Guards, poll_slots
from fedge.server.deploy import Deployments
from fedge.server.downloads import add_service
from fedge.server.evaluate import Evaluator
from fedge.server.fleet_eval import FleetEvaluation, latest_gauges
from fedge.server.preflight import preflight
from fedge.server.registry import Registry
from fedge.server.rollout import Rollout
from fedge.server.rounds import Phase, Rounds, RoundSettings
from fedge.server.service import FederationService
from fedge.server.side_tasks import edge_ready, rollout_settled
from fedge.server.status import snapshot
from fedge.server.status import write as write_status
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.catalog import build_strategy
from fedge.server.strategies.dp import with_privacy
from fedge.server.tokens import TokenStore
from fedge.tasks import Task, load_task
from fedge.tasks.training import weights_of
from fedge.tensors import CHUNK_BYTES, fingerprint, from_blob
from fedge.threads import join_interruptibly

if TYPE_CHECKING:
    from fedge.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

SERVICE_NAME = "fedge.v1.Federation"
# Every transfer is chunked, so messages stay far below this.
MAX_MESSAGE_BYTES = 4 * CHUNK_BYTES


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.insecure:
        return None
    try:
        key = Path(config.tls_key).read_bytes()
        cert = Path(config.tls_cert).read_bytes()
        client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    except OSError as exc:
        raise FedgeError(f"cannot read the TLS key or certificates: {exc}") from exc
    # With a client CA, a device without a certificate it signed fails the handshake.
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _deployments(config: ServerConfig, task: Task) -> Deployments | None:
    """The edge deployments of the run, unless turned off or the task has no student."""
    if not config.edge:
        return None
    if task.build_student is None:
        log.info("task %s names no student model: no edge artifacts", task.name)
        return None
    deployments = Deployments(task, config.state_dir, every=config.edge_every)
    log.info("edge artifacts are signed with key %s; devices trust %s",
             deployments.key.key_id, deployments.public_key_path)
    return deployments


def _resume_edge(rounds: Rounds, store: StateStore, deployments: Deployments | None) -> None:
    """A run restarted after its last round builds the final artifact if it is missing."""
    if deployments is None or rounds.phase is not Phase.DONE:
        return
    if deployments.due(rounds.model_version, last=True):
        latest = store.latest()
        if latest is not None:
            deployments.request(latest[0].round, from_blob(latest[1])[0])


class FedgeServer:
    """One federated run: start() binds and begins, wait() blocks until it is over.

    on_round: called with a round's record when it commits (accuracy None while its test
    evaluation runs in the background) and again, from the evaluation's thread, once its
    accuracy is attached (docs/evaluation.md): make it idempotent per round.
    start_clients: devices the first round waits for (up to the round timeout) before it
    samples; ``fedge simulate`` passes its fleet's size so round 1 samples all of it.
    rounds_type: the round state machine and its driver (a relay, fedge.relay, drives its
    rounds from the tasks its upstream hands it).
    """

    def __init__(self, config: ServerConfig,
                 on_round: Callable[[RoundRecord], None] | None = None,
                 start_clients: int = 0, rounds_type: type[Rounds] = Rounds) -> None:
        self.config = config
        preflight(config)  # before a key, an evaluation or a state dir is made
        self.task = load_task(config.task)
        torch.manual_seed(config.seed)
        initial = weights_of(self.task.build_model())
        specs = fingerprint(initial)
        self.store = StateStore(config.state_dir)
        self.store.check_task(self.task.name, [str(s) for s in specs])
        defaults = self.task.defaults
        distributed = config.dp == "distributed"
        settings = RoundSettings(
            rounds=config.rounds, min_clients=config.min_clients, fraction=config.fraction,
            round_timeout_s=config.round_timeout_s, retry_backoff_s=config.retry_backoff_s,
            epochs=config.epochs or defaults.epochs, lr=config.lr or defaults.lr,
            batch_size=config.batch_size or defaults.batch_size, seed=config.seed,
            momentum=defaults.momentum if config.momentum is None else config.momentum,
            linger_s=config.linger_s, max_examples=config.max_examples,
            quorum_fraction=config.quorum_fraction, max_update_norm=config.max_update_norm,
            max_round_attempts=config.max_round_attempts,
            norm_action=config.norm_action, update_kind=config.update,
            encoding=config.encoding, topk_fraction=config.topk_fraction,
            start_clients=start_clients, secure=config.secure_aggregation,
            secure_threshold=config.secure_threshold,
            secure_neighbours=config.secure_neighbours,
            # Distributed DP: the devices clip to the DP clip and add a noise share.
            secure_clip=config.dp_clip if distributed else config.secure_clip,
            secure_noise_multiplier=config.dp_noise_multiplier if distributed else 0.0,
            secure_stage_timeout_s=config.secure_stage_timeout_s,
            examples_factor=config.examples_factor,
            norm_factor=config.norm_factor, warmup_norm_ratio=config.warmup_norm_ratio,
            eval_every=config.eval_every, eval_threads=config.eval_threads)
        strategy = build_strategy(config.strategy, config.server_lr, config.server_momentum,
                                  config.mu, config.trim, config.byzantine_f)
        if config.update == "gradient" and config.server_lr is None:
            log.warning("gradient updates take one step a round with server lr %g; FedSGD "
                        "often needs a smaller one (--server-lr)", strategy.server_lr)
        self.registry = Registry(config.device_timeout_s)
        self.deployments = _deployments(config, self.task)
        strategy = with_privacy(strategy, config)
        budget = None
        if config.dp != "off":
            from fedge.server.budget import PrivacyBudget

            budget = PrivacyBudget(config.dp, config.dp_noise_multiplier, config.dp_delta,
                                   config.target_epsilon, self.store)
        if config.mode == "async":  # FedBuff: versions every buffer_size updates
            from fedge.server.async_rounds import AsyncRounds

            self.rounds: Rounds = AsyncRounds(settings, specs, self.registry, self.store,
                                              Evaluator(self.task), initial, self.task.name,
                                              config, on_round, strategy, self.deployments)
        else:
            self.rounds = rounds_type(settings, specs, self.registry, self.store,
                                      Evaluator(self.task), initial, self.task.name,
                                      on_round, strategy, self.deployments, budget)
        if config.canary_fraction > 0 and self.deployments is not None:
            self.deployments.gate = Rollout(
                config.canary_fraction, config.canary_margin, config.canary_timeout_s,
                config.holdout_fraction, config.seed, self.store,
                functools.partial(rollout_settled, self.rounds))
            if self.deployments.latest is not None:  # served again after a restart
                self.deployments.gate.adopt(self.deployments.latest.round)
            self.deployments.on_ready = functools.partial(edge_ready, self.rounds)
        if config.eval_every_rounds:
            self.rounds.evaluation = FleetEvaluation(
                config.eval_every_rounds, config.eval_fraction, config.holdout_fraction,
                config.seed, self.store)
            if self.deployments is not None:  # each new artifact is evaluated too
                self.deployments.on_ready = functools.partial(edge_ready, self.rounds)
        _resume_edge(self.rounds, self.store, self.deployments)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers,
                                       thread_name_prefix="rpc"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self.tokens = TokenStore(config.state_dir)
        guards = Guards(allow_anonymous=config.allow_anonymous,
                        max_uploads=config.max_uploads, rate_limit=config.rate_limit,
                        rate_burst=config.rate_burst,
                        max_polls=poll_slots(config.max_workers),
                        stream_idle_s=config.stream_idle_s, stream_max_s=config.stream_max_s,
                        anonymous_per_address=config.anonymous_per_address,
                        partial_upload_bytes=config.partial_upload_bytes,
                        partial_upload_ttl_s=config.partial_upload_ttl_s,
                        spool_dir=str(Path(config.state_dir) / "spool"),
                        spool_threshold_bytes=config.spool_threshold_bytes,
                        spool_budget_bytes=config.spool_budget_bytes)
        self.service = FederationService(self.task.name, specs, self.registry, self.rounds,
                                         self.store, config.poll_seconds,
                                         config.max_update_bytes, self.tokens, guards)
        add_service(self.service, self._grpc)  # FetchModel's chunks serialized by hand
        self._started = time.monotonic()
        self.service.status = self.status
        self._metrics: MetricsEndpoint | None = None
        self.metrics_port = 0
        self._status_stop = threading.Event()
        self._status_writer = threading.Thread(target=self._write_status, name="status",
                                               daemon=True)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        self._driver = threading.Thread(target=self._drive, name="rounds", daemon=True)
        self._driven = threading.Event()  # set when the driver thread's work has ended
        self.port = 0

    def start(self) -> int:
        """Binds the port (0 picks a free one), starts serving and the round driver."""
        address = f"{self.config.host}:{self.config.port}"
        credentials = _credentials(self.config)
        try:
            if credentials is None:
                self.port = self._grpc.add_insecure_port(address)
            else:
                self.port = self._grpc.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise FedgeError(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise FedgeError(f"cannot listen on {address} (in use?)")
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if credentials is None:
            log.warning("serving WITHOUT TLS on %s (--insecure): tokens and updates cross "
                        "the network in clear; use --tls-cert/--tls-key outside loopback "
                        "development", address)
        if self.config.allow_anonymous:
            log.warning("accepting anonymous devices (--allow-anonymous): device ids are "
                        "not verified")
        log.info("serving task %s on port %d (%d rounds, state in %s)", self.task.name,
                 self.port, self.config.rounds, self.config.state_dir)
        if self.config.metrics_port:
            from fedge.metrics import MetricsEndpoint
            from fedge.server.metrics import ServerCollector

            self._metrics = MetricsEndpoint(ServerCollector(
                self.rounds, self.registry, self.store, lambda: dict(self.service.refusals),
                self._edge_metrics))
            self.metrics_port = self._metrics.start(self.config.host, self.config.metrics_port)
        self._status_writer.start()
        self._driver.start()
        return self.port

    def _edge_metrics(self) -> dict[str, float]:
        built = self.deployments.built if self.deployments is not None else 0
        extra = {"fedge_edge_artifacts_built": float(built),
                 "fedge_edge_artifacts_installed": float(self.service.edge_installed)}
        if self.rounds.evaluation is not None:  # the newest federated evaluation
            extra.update(latest_gauges(self.store))
        budget = self.rounds.budget
        if budget is not None:  # the privacy spent so far, at the run's delta
            extra["fedge_dp_epsilon"] = budget.epsilon
            extra["fedge_dp_delta"] = budget.delta or 0.0
        return extra

    def status(self, last_rounds: int = 5) -> dict[str, Any]:
        """The run's state now (what `fedge status` prints)."""
        return snapshot(self.task.name, self.config.rounds, self.rounds, self.registry,
                        self.store, dict(self.service.refusals), self._started, last_rounds)

    def _write_status(self) -> None:
        stopping = False
        interval = self.config.status_interval_s
        while not stopping:
            stopping = self._status_stop.wait(interval)
            started = time.perf_counter()
            try:  # also once more on the way out, so the file says how the run ended
                write_status(self.config.state_dir, self.status())
            except Exception:  # a status file must never take the server down
                log.exception("could not write %s/status.json", self.config.state_dir)
            # A large fleet makes the snapshot costly: spend at most ~5% of the time on it.
            interval = max(self.config.status_interval_s, 20 * (time.perf_counter() - started))

    def wait(self, timeout: float | None = None) -> list[RoundRecord]:
        """Blocks until every round is committed (or stop()), then shuts down."""
        if not join_interruptibly(self._driver, timeout):
            raise TimeoutError(f"the run did not finish within {timeout} s")
        records = self.store.rounds()
        self.shutdown()
        return records

    def _drive(self) -> None:
        try:
            self.rounds.run()
        finally:
            self._driven.set()

    def stop(self) -> None:
        """Asks the round driver to stop; wait() then returns."""
        self.rounds.stop()

    def shutdown(self, grace: float = 1.0) -> None:
        """Stops serving and closes the state store (idempotent)."""
        self.rounds.stop()
        # A stopped driver still finishes the evaluation it owes (the last committed
        # round's: fedge.server.eval_worker) and writes it to the store: let it.
        # An Event, not is_alive(): a join() that Ctrl-C interrupted (in wait()) can
        # leave is_alive() False while the driver still runs, and the store was then
        # closed under it ("Cannot operate on a closed database").
        if self._driver.ident is not None and threading.current_thread() is not self._driver:
            self._driven.wait(120)
        self._health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self.service.close()
        self._status_stop.set()
        if self._status_writer.is_alive():
            self._status_writer.join(5)
        if self._metrics is not None:
            self._metrics.stop()
        self.store.close()
        self.tokens.close()
