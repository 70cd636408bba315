"""A Flower client under the fedge daemon, unchanged.

``fedge client --flower-client module:attr`` (and ``fedge simulate --flower-client``)
runs a Flower ``NumPyClient`` (``get_parameters``, ``fit``, ``evaluate``), a Flower
``Client``, a ``client_fn(context)`` returning either, or a Message-API ``ClientApp``
(its ``@app.train()`` function), as a fedge device: it joins,
long-polls and uploads as every fedge device does (resumable, checked transfers, the
refusal table, TLS and tokens), and its own ``fit`` does the training.

The adapter plugs into the daemon where a trainer does: :class:`FlowerTrainer` is the
daemon's trainer, so the daemon's loop, its TRAIN handler and the update encodings stay
as they are. Each TRAIN task becomes:

1. ``evaluate(global, config)`` on the round's global model, when the client defines it
   (reported with the update as ``flower_eval_loss`` and its metrics, ``flower_eval_*``);
2. ``fit(global, config)``: its parameter list is named by the task's tensors (the
   task's model, in ``state_dict`` order; see :mod:`fedge.flower.params`), and the
   example count it returns weights the update.

The Flower ``config`` of both calls carries fedge's training settings under Flower's
usual names: ``server-round``, ``server_round``, ``local-epochs``, ``epochs``, ``lr``,
``batch-size``, ``batch_size``, ``seed`` and ``proximal-mu``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedge.client.daemon import Daemon
from fedge.client.session import Session
from fedge.client.trainer import Trainer
from fedge.errors import FedgeError
from fedge.flower.identity import act_as_server
from fedge.flower.params import name_params, to_list, to_named
from fedge.protos import fedge_pb2
from fedge.tasks import Task
from fedge.tasks.training import weights_of
from fedge.tensors import Spec, spec_of

log = logging.getLogger(__name__)

Scalar = bool | int | float | str | bytes


def parse_node_config(text: str) -> dict[str, Scalar]:
    """Flower's ``--node-config`` syntax: ``key=value`` pairs separated by spaces or
    commas; numbers become ints or floats, quoted strings lose their quotes."""
    out: dict[str, Scalar] = {}
    for pair in text.replace(",", " ").split():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise FedgeError(f"--flower-node-config {pair!r}: give key=value pairs")
        value: Scalar = raw.strip("\"'")
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
        out[key] = value
    return out


def load_flower_client(spec: str, node_config: Mapping[str, Any] | None = None,
                       node_id: int = 0) -> Any:
    """The Flower client named by ``module:attr``: a NumPyClient or Client instance, a
    class of one (made with no arguments), or a ``client_fn(context)``."""
    try:
        from flwr.client import Client, NumPyClient
    except ImportError as exc:
        raise FedgeError("--flower-client needs Flower: pip install 'fedge[flower]'") from exc

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FedgeError(f"--flower-client {spec!r}: give module:attr (client:FlowerClient)")
    if os.getcwd() not in sys.path:  # like `python -m`: the project's own client.py
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise FedgeError(f"--flower-client: cannot import {module_name!r}: {exc}") from exc
    except AttributeError as exc:
        raise FedgeError(f"--flower-client: {module_name!r} has no {attr!r}") from exc
    from flwr.clientapp import ClientApp
    from flwr.common import Context, RecordDict

    context = Context(run_id=0, node_id=node_id, node_config=dict(node_config or {}),
                      state=RecordDict(), run_config={})
    if isinstance(obj, ClientApp):
        if getattr(obj, "_call", None) is not None:  # ClientApp(client_fn=...)
            raise FedgeError(f"{spec} is a ClientApp made from a client_fn: give the "
                             "client_fn itself (module:client_fn)")
        return MessageClient(obj, context)
    if inspect.isclass(obj) and issubclass(obj, NumPyClient | Client):
        obj = obj()
    elif callable(obj) and not isinstance(obj, NumPyClient | Client):
        obj = obj(context)
    if not isinstance(obj, NumPyClient | Client):
        raise FedgeError(f"{spec} gave a {type(obj).__name__}, not a Flower NumPyClient "
                         "or Client")
    return obj


class MessageClient:
    """A Message-API ClientApp (``@app.train()``), called as Flower's SuperNode calls
    it: a "train" Message of ``arrays`` (named as the task's tensors) and ``config``."""

    def __init__(self, app: Any, context: Any) -> None:
        self.app = app
        self.context = context

    def fit(self, arrays: Mapping[str, np.ndarray], config: Mapping[str, Scalar]
            ) -> tuple[Mapping[str, np.ndarray], int, dict[str, Any]]:
        """The app's train reply: its arrays, num-examples and metrics."""
        from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

        act_as_server(self.context.run_id)  # the "train" is the server's (Flower 1.38+)
        content = RecordDict({
            "arrays": ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in
                                   arrays.items()}),
            "config": ConfigRecord(dict(config))})
        reply = self.app(Message(content=content, dst_node_id=self.context.node_id,
                                 message_type="train"), self.context)
        if reply.has_error():
            raise FedgeError(f"the ClientApp's train failed: {reply.error.reason}")
        record = next(iter(reply.content.array_records.values()))
        metrics: dict[str, Any] = {}
        for metric_record in reply.content.metric_records.values():
            metrics.update(metric_record)
        count = int(metrics.pop("num-examples", 0))
        return {n: np.asarray(a.numpy()) for n, a in record.items()}, count, metrics


def flower_config(round_: int, epochs: int, lr: float, batch_size: int, seed: int,
                  proximal_mu: float) -> dict[str, Scalar]:
    """A TRAIN task's settings as a Flower config, under the names Flower apps use."""
    return {"server-round": round_, "server_round": round_, "local-epochs": epochs,
            "epochs": epochs, "lr": lr, "batch-size": batch_size, "batch_size": batch_size,
            "seed": seed, "proximal-mu": proximal_mu}


def _numbers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric metrics (the update header carries doubles only)."""
    return {prefix + k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


class FlowerTrainer(Trainer):
    """The daemon's trainer, done by a Flower client's fit (and evaluate)."""

    def __init__(self, task: Task, client: Any, x: np.ndarray | None = None,
                 y: np.ndarray | None = None) -> None:
        """task: names the parameters and is the server's; client: a Flower
        NumPyClient or Client. x, y: local labelled data that shipped edge models are
        measured on (the Flower client keeps its own training data)."""
        shape = task.schema.input_shape
        x = np.zeros((0, *shape), np.float32) if x is None else x
        y = np.zeros(0, np.int64) if y is None else y
        super().__init__(task, x, y, "cpu")
        self.client = client
        # In state_dict order, the order of Flower's lists (fingerprint() sorts by name).
        self.specs: list[Spec] = [spec_of(n, a) for n, a in weights_of(self.model).items()]
        # Until the first fit says how many examples the client has, it counts as one:
        # the daemon skips devices with none.
        self._num_examples = 1
        self.round = 0  # the TRAIN task's round, set by the handler attach() wraps

    @property
    def num_examples(self) -> int:
        """The example count of the client's last fit (1 before its first)."""
        return self._num_examples

    def train(self, weights: dict[str, np.ndarray], epochs: int, lr: float, batch_size: int,
              seed: int, proximal_mu: float = 0.0, momentum: float | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The client's evaluate (if any) and fit from weights; new weights and metrics."""
        config = flower_config(self.round, epochs, lr, batch_size, seed, proximal_mu)
        if momentum is not None:  # the server's --momentum; a Flower client may read it
            config["momentum"] = momentum
        arrays = to_list(weights, self.specs)
        metrics = self._evaluate(arrays, config)
        started = time.perf_counter()
        new, count, fit_metrics = self._fit(arrays, config)
        if count <= 0:
            raise FedgeError(f"the Flower client's fit returned {count} examples")
        self._num_examples = int(count)
        metrics.update(_numbers(fit_metrics))
        # The daemon logs and reports train_loss; a client that names it otherwise (or
        # not at all) reports its "loss", else 0 (a metric, never a NaN in the store).
        metrics.setdefault("train_loss", metrics.get("loss", 0.0))
        metrics["train_seconds"] = time.perf_counter() - started
        return to_named(new, self.specs), metrics

    def attach(self, daemon: Daemon) -> None:
        """Wraps the daemon's TRAIN handler (its public hook) so that fit and evaluate
        see the task's round as Flower's ``server-round``."""
        train = daemon.handle(fedge_pb2.TRAIN, lambda session, task: None)
        assert train is not None

        def train_with_round(session: Session, task: fedge_pb2.Task) -> None:
            self.round = int(task.round)
            train(session, task)

        daemon.handle(fedge_pb2.TRAIN, train_with_round)

    def gradient(self, weights: dict[str, np.ndarray], batch_size: int, seed: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Refused: a Flower client returns weights, not gradients."""
        raise FedgeError("a Flower client sends weights: run the server with the weights "
                         "or delta update kind, not gradient")

    def _fit(self, arrays: list[np.ndarray], config: dict[str, Scalar]
             ) -> tuple[list[np.ndarray], int, Mapping[str, Any]]:
        from flwr.client import NumPyClient
        from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

        if isinstance(self.client, MessageClient):
            named, count, metrics = self.client.fit(dict(zip([s.name for s in self.specs],
                                                              arrays, strict=True)), config)
            return list(name_params(named, self.specs).values()), count, metrics
        if isinstance(self.client, NumPyClient):
            new, count, metrics = self.client.fit(arrays, config)
            return list(new), int(count), metrics or {}
        res = self.client.fit(FitIns(ndarrays_to_parameters(arrays), config))
        return parameters_to_ndarrays(res.parameters), int(res.num_examples), res.metrics

    def _evaluate(self, arrays: list[np.ndarray], config: dict[str, Scalar]
                  ) -> dict[str, float]:
        """The client's evaluation of the global model, when it defines one."""
        from flwr.client import Client, NumPyClient
        from flwr.common import Code, EvaluateIns, ndarrays_to_parameters

        if isinstance(self.client, MessageClient):
            return {}  # a ClientApp's evaluate runs on Flower's schedule, not per update
        if isinstance(self.client, NumPyClient):
            # Evaluation is optional in Flower (its has_evaluate, moved in 1.32, checks so)
            if type(self.client).evaluate is NumPyClient.evaluate:
                return {}
            loss, _, metrics = self.client.evaluate(arrays, config)
        else:
            if type(self.client).evaluate == Client.evaluate:
                return {}
            res = self.client.evaluate(EvaluateIns(ndarrays_to_parameters(arrays), config))
            if res.status.code != Code.OK:
                return {}
            loss, metrics = res.loss, res.metrics
        return {"flower_eval_loss": float(loss), **_numbers(metrics or {}, "flower_eval_")}
