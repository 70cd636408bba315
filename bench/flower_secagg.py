"""Flower's SecAgg+ driven in one process, as the oracle for fedge's masked sum.

Flower's own code runs unchanged: the server side is ``SecAggPlusWorkflow`` (flwr
1.30-1.41, ``flwr.server.workflow``) and each device is ``secaggplus_mod`` in front of a
ClientApp-style handler that returns the device's vector as its FitRes. Only the
transport is ours: :class:`LoopbackGrid` hands each message to the addressed node's mod
and returns the replies (no network, no SuperLink), as fedge's in-process protocol rows
do.

The same quantized vectors: fedge's inputs are integers in Z_2^32 read as signed, each
at most 2^30 / n in magnitude. Flower quantizes a float x to
``round((clip(x, -c, c) + c) * Q / (2 c))`` and weighs by ``num_examples / max_weight``;
with ``c = Q / 2``, Q even and every device's weight equal to ``max_weight``, that map is
``x + Q / 2`` exactly (stochastic rounding leaves integers alone), so Flower masks,
sums mod 2^32 and unmasks the very integers fedge does, and its dequantized mean times n
is their sum. Q = 2 (ceil(2^30 / n) + 1) keeps every shifted input in [0, Q] and the
n-device sum below Flower's modulus 2^32.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    ConfigRecord,
    Context,
    FitRes,
    Message,
    RecordDict,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.typing import Code
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedge.flower.identity import act_as_server

try:  # Flower 1.32+ moved the legacy converters under flwr.compat
    import flwr.compat.common.recorddict_compat as compat
except ImportError:
    import flwr.common.recorddict_compat as compat  # type: ignore[no-redef,unused-ignore]

MAX_WEIGHT = 1000.0


@dataclass
class FlowerRound:
    """What Flower's SecAgg+ round gave: the integer sum and its seconds (devices and
    server together, one process)."""

    total: np.ndarray  # int64: n times the aggregated mean, rounded
    seconds: float
    num_shares: int
    threshold: int


class LoopbackGrid:
    """A Flower Grid that delivers each message to its node's mod in this process."""

    def __init__(self, handlers: Mapping[int, Any]) -> None:
        self._handlers = handlers

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None
                         ) -> list[Any]:
        """Every message's reply, node by node (timeout: unused, nothing waits). Each
        node gets its own copy, as over a wire: the workflow sends one content object
        to every node and the mod edits what it receives."""
        return [self._handlers[m.metadata.dst_node_id](copy.deepcopy(m)) for m in messages]


def secagg_plus_sum(inputs: Mapping[str, np.ndarray], num_shares: int | float = 1.0,
                    threshold: int | float = 0.5) -> FlowerRound:
    """Flower's SecAgg+ sum of fedge's quantized inputs (uint32 vectors whose signed
    values are at most 2^30 / n in magnitude): see the module docstring."""
    n = len(inputs)
    q_range = 2 * (-(-(1 << 30) // n) + 1)  # even, Q / 2 > 2^30 / n, n * Q < 2^32
    vectors = {node: np.asarray(v, np.uint32).view(np.int32).astype(np.float64)
               for node, v in zip(range(1, n + 1), inputs.values(), strict=True)}
    if max(float(np.max(np.abs(v))) for v in vectors.values()) > q_range / 2:
        raise ValueError("an input is outside Flower's quantization range")

    def handler(node_id: int) -> Any:
        context = Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(),
                          run_config={})

        def fit(message: Any, ctxt: Any) -> Any:  # the ClientApp: returns the vector
            res = FitRes(status=Status(code=Code.OK, message=""),
                         parameters=ndarrays_to_parameters([vectors[node_id]]),
                         num_examples=int(MAX_WEIGHT), metrics={})
            return Message(compat.fitres_to_recorddict(res, True), reply_to=message)

        return lambda message: secaggplus_mod(message, context, fit)

    # Duck-typed: the workflow only calls send_and_receive (flwr's Grid ABC has more).
    grid: Any = LoopbackGrid({node: handler(node) for node in vectors})
    manager = SimpleClientManager()
    for node in vectors:
        manager.register(GridClientProxy(node, grid, 1))
    captured: list[np.ndarray] = []

    class Capture(FedAvg):
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            captured.append(parameters_to_ndarrays(results[0][1].parameters)[0])
            return super().aggregate_fit(server_round, results, failures)

    strategy = Capture(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n)
    state = RecordDict()
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1})
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros_like(vectors[1])]), True)
    context = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
        config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager)
    workflow = SecAggPlusWorkflow(num_shares, threshold, max_weight=MAX_WEIGHT,
                                  clipping_range=q_range / 2, quantization_range=q_range)
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # its per-stage INFO lines, once per round
    act_as_server(1)  # the workflow's messages are the SuperLink's, of run 1 (Flower 1.38+)
    try:
        started = time.perf_counter()
        workflow(grid, context)
        seconds = time.perf_counter() - started
    finally:
        flwr_log.setLevel(level)
    if not captured:
        raise RuntimeError("Flower's SecAgg+ workflow halted without an aggregate")
    total = np.rint(captured[0] * n).astype(np.int64)
    return FlowerRound(total, seconds, int(num_shares) if num_shares >= 1 else -1,
                       int(threshold) if threshold >= 1 else -1)
