"""A relay toward its upstream: one device, whose TRAIN task runs a round below.

The relay's upstream side is a real client daemon (fedge.client.daemon.Daemon: its join,
long poll, backoff, TLS, token and refusal handling), with two task handlers of its own
set through the daemon's public ``handle()``:

- TRAIN: fetch the global model once (cached by version: one download serves every
  device below), run the relay's own round over it (fedge.relay.rounds), and send the
  partial aggregate as the update kind and encoding the upstream asked for, declaring
  the examples it weighs. A task handed out again is not run twice.
- DEPLOY: fetch the edge artifact once, and the model it was built from, cache them
  for the devices below (fedge.relay.edge_cache) and report the artifact taken
  (``edge_installed``: the upstream offers it until a device reports, and the relay's
  devices report to the relay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import grpc
import numpy as np

from fedge.client.channel import refusal_of
from fedge.client.daemon import Daemon, Stopped
from fedge.client.session import Session
from fedge.client.transfers import decode_weights, download, submit
from fedge.client.update import KIND_NAMES, UpdatePlan, encode_update
from fedge.encodings import ErrorFeedback
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2
from fedge.relay.edge_cache import EdgeCache
from fedge.relay.rounds import Partial, RelayRounds, Upstream
from fedge.tensors import Spec, sha256_hex, stream_sha256

log = logging.getLogger(__name__)

# TrainConfig fields a strategy sets for devices (client_config()): handed on below.
PASSED_DOWN = ("proximal_mu", "dp_clip", "dp_noise_multiplier")


def as_update(gradient: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
              kind: str) -> dict[str, np.ndarray]:
    """A mean pseudo-gradient g as an update of kind: ``weights`` sends w - g, ``delta``
    sends -g, ``gradient`` sends g (the server's intake turns each back into g)."""
    out = {}
    for name, g in gradient.items():
        w = weights[name]
        if kind == "weights":
            out[name] = (w.astype(np.float64) - g).astype(w.dtype) if w.dtype.kind != "f" \
                else (w - g.astype(w.dtype, copy=False))
        elif kind == "delta":
            out[name] = np.negative(g).astype(w.dtype, copy=False)
        else:
            out[name] = g.astype(w.dtype, copy=False)
    return out


def closing_time(deadline: float, margin_s: float, now: float) -> float:
    """When the relay's round stops waiting for its devices: margin_s before the
    upstream's deadline, or half way there when less time than the margin is left."""
    left = deadline - now
    return now + (left - margin_s if left > 2 * margin_s else left / 2)


class Uplink:
    """The TRAIN and DEPLOY handlers of the relay's upstream daemon."""

    def __init__(self, daemon: Daemon, rounds: RelayRounds, specs: list[Spec],
                 margin_s: float, edge: EdgeCache | None) -> None:
        self._daemon = daemon
        self._rounds = rounds
        self._specs = specs
        self._margin_s = margin_s
        self._edge = edge
        self._model: tuple[int, dict[str, np.ndarray]] | None = None  # version, weights
        self._done: set[str] = set()  # upstream tasks this relay has answered
        self._feedback = ErrorFeedback()
        self.downloads = 0  # model versions fetched from the upstream
        self.partials = 0  # partial aggregates the upstream accepted
        self.bytes_up = 0
        daemon.relay = True
        daemon.handle(fedge_pb2.TRAIN, self.train)
        daemon.handle(fedge_pb2.DEPLOY, self.deploy)

    def _weights(self, session: Session, version: int) -> dict[str, np.ndarray]:
        """The upstream's model version, downloaded once."""
        if self._model is None or self._model[0] != version:
            blob = download(session, version)
            self.downloads += 1
            self._model = (version, decode_weights(blob, version, self._specs,
                                                   self._daemon.task.name))
        return self._model[1]

    def train(self, session: Session, task: fedge_pb2.Task) -> None:
        """Runs a round below for the upstream's TRAIN task and sends its partial
        aggregate; a refused one is logged, and the next task taken."""
        if task.task_id in self._done:  # handed out again while its round is open
            self._daemon.pause(max(0.5, min(self._daemon.config.poll_seconds,
                                            task.deadline_unix - time.time())))
            return
        self._done.add(task.task_id)
        cfg = task.train
        if cfg.HasField("secure"):  # the upstream refuses relays in secure runs
            raise FedgeError("the upstream asked this relay for a masked update: secure "
                             "aggregation does not go through relays")
        weights = self._weights(session, task.model_version)
        plan = UpdatePlan.from_proto(cfg)
        passed = {k: float(getattr(cfg, k)) for k in PASSED_DOWN if getattr(cfg, k)}
        up = Upstream(task.round, task.model_version,
                      closing_time(task.deadline_unix, self._margin_s, time.time()),
                      plan.epochs, plan.lr, plan.batch_size, plan.momentum,
                      KIND_NAMES[cfg.update_kind], passed)
        partial = self._rounds.relay_round(up, weights)
        if partial is None:
            if self._rounds.stopping:
                raise Stopped()
            return
        self._send(session, task, plan, weights, partial)

    def _send(self, session: Session, task: fedge_pb2.Task, plan: UpdatePlan,
              weights: Mapping[str, np.ndarray], partial: Partial) -> None:
        arrays = encode_update(as_update(partial.gradient, weights, plan.kind), plan,
                               self._feedback)
        header = fedge_pb2.UpdateHeader(
            session_id=session.id, task_id=task.task_id, round=task.round,
            kind=task.train.update_kind or fedge_pb2.WEIGHTS,
            encoding=task.train.encoding or fedge_pb2.F32, num_examples=partial.examples,
            metrics={"relay_updates": float(partial.updates),
                     "relay_sampled": float(partial.sampled)},
            num_tensors=len(arrays), sha256=stream_sha256(arrays))
        try:
            submit(session, header, arrays, task.deadline_unix)
        except grpc.RpcError as exc:
            refusal = refusal_of(exc)
            if refusal.needs_new_session:
                raise
            log.error("round %d: the upstream refused this relay's partial aggregate "
                      "(%s, %s): %s", task.round, refusal.name or "-", refusal.code,
                      refusal.details)
            return
        self.partials += 1
        self.bytes_up += sum(a.nbytes for a in arrays.values())
        log.info("round %d: partial aggregate of %d update(s) (%d examples) sent",
                 task.round, partial.updates, partial.examples)

    def deploy(self, session: Session, task: fedge_pb2.Task) -> None:
        """Caches the upstream's edge artifact for the devices below."""
        taken = 0.0
        if self._edge is not None:
            # The artifact's round is the upstream's newest model: served below too, so
            # that devices may report on it (and fetch it) at this relay.
            self._rounds.serve_model(task.model_version,
                                     self._weights(session, task.model_version))
            blob = download(session, task.model_version, artifact=True)
            if task.artifact_sha256 and sha256_hex(blob) != task.artifact_sha256:
                raise FedgeError("the edge artifact is not the one the DEPLOY task named")
            self._edge.put(task.model_version, bytes(blob))
            taken = 1.0
        metrics = {"edge_installed": taken} if taken else {"edge_refused": 1.0}
        report = fedge_pb2.MetricsReport(session_id=session.id, round=task.model_version,
                                         model_version=task.model_version, metrics=metrics)
        session.call(session.stub.ReportMetrics.future(report, timeout=30))
