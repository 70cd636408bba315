"""Where a secure round's time goes: one `fedge simulate` round (--task, by default
digits-mlp; threads, or processes: bench/secure_timeline_hosts.py) with its per-device
and per-stage timeline, beside a plain round of the same fleet.

    python -m bench.secure_timeline [--clients 100] [--plain] [--task T]
        [--backend threads|processes] [--out bench/results/timeline.json]

A bench-only hook: the run's own functions are wrapped for its duration (nothing is
left in the product), and each call logs when it began and ended, on which device
and with which stage. Devices: the TRAIN task
received (the poll that returned it, with the round's roster: the keys came with the
polls), each SecureStep wait (share, unmask, reveal) with the number of calls it took,
each compute step (share, premask, mask, reveal, download, training, quantization), the
masked upload (or the plain one).
Server: each stage's opening (from the driver), each device's arrival at a stage, and
each handler call. The summary per stage gives when it opened and closed, its last
arrival (which device), and how long the barrier took after that arrival to close and
to wake the devices; per device phase, the median and slowest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.secure_timeline_hosts import host_events, hosts_hooked, native_cpu
from fedge.client import daemon as client_daemon
from fedge.client import secure as client_secure
from fedge.secure.device import MaskingDevice
from fedge.secure.masked_sum import MaskedSum
from fedge.server import driver as server_driver
from fedge.server import secure_round, secure_service
from fedge.server.rounds import Rounds
from fedge.server.store import StateStore


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of this process, by ident: (name, seconds)."""
    out = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[thread.ident] = (thread.name, time.clock_gettime(clock))
        except (OSError, ValueError):  # ended meanwhile
            continue
    return out


def _kind(name: str) -> str:
    """A thread's kind, from its name."""
    for prefix, kind in (("rpc", "server handlers"), ("client-", "devices"),
                         ("rounds", "round driver"), ("MainThread", "main")):
        if name.startswith(prefix):
            return kind
    return name.split(" ", 1)[-1].strip("()") if "(" in name else "other threads"


def cpu_by_kind(start: dict[int, tuple[str, float]], end: dict[int, tuple[str, float]],
                process_s: float, ended: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds between two thread_cpu() snapshots, by kind of thread, with those of
    the threads that ended meanwhile (ended: their "ended" events; a thread that started
    before the round is counted whole); gRPC's C threads are the process's rest."""
    out: dict[str, float] = {}
    for ident, (name, cpu) in end.items():
        used = cpu - start.get(ident, (name, 0.0))[1]
        out[_kind(name)] = out.get(_kind(name), 0.0) + used
    for e in ended:
        kind = f"{e['kind']} (ended)"
        out[kind] = out.get(kind, 0.0) + e["cpu"]
    out["gRPC core, rest"] = process_s - sum(out.values())
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class Timeline:
    """Events (seconds since the start, who, what) logged from any thread."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._device: dict[int, str] = {}  # thread ident -> device id (device threads)
        self.cpu: dict[str, Any] = {}  # snapshots at the round's opening and commit
        self.native: dict[str, dict[str, float]] = {}  # gRPC's C threads, same times

    def now(self) -> float:
        """Seconds since the timeline started."""
        return time.perf_counter() - self.t0

    def log(self, who: str, what: str, start: float, end: float | None = None,
            **extra: Any) -> None:
        """One event (end None: an instant)."""
        event = {"who": who, "what": what, "t": round(start, 6), **extra}
        if end is not None:
            event["end"] = round(end, 6)
        with self._lock:
            self.events.append(event)

    def device(self) -> str:
        """The device this thread runs ("?" on other threads)."""
        return self._device.get(threading.get_ident(), "?")

    def bind(self, device_id: str) -> None:
        """This thread is device_id's daemon."""
        self._device[threading.get_ident()] = device_id


def _wrap(owner: Any, name: str, wrapper: Any) -> tuple[Any, str, Any]:
    original = getattr(owner, name)
    setattr(owner, name, wrapper(original))
    return owner, name, original


@contextmanager
def hooked(timeline: Timeline) -> Iterator[None]:
    """Wraps the round's functions so that each call logs itself on timeline."""
    tl = timeline

    def device_span(what: str) -> Any:
        def wrapper(original: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                start, cpu = tl.now(), time.thread_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    tl.log(tl.device(), what, start, tl.now(), cpu=time.thread_time() - cpu)
            return run
        return wrapper

    def train(original: Any) -> Any:
        def run(self: Any, session: Any, task: Any) -> Any:
            tl.bind(session.device_id)
            start, cpu = tl.now(), time.thread_time()
            tl.log(session.device_id, "task", start)
            try:
                return original(self, session, task)
            finally:
                tl.log(session.device_id, "train handler", start, tl.now(),
                       cpu=time.thread_time() - cpu)
        return run

    def step(original: Any) -> Any:
        def run(self: Any, request: Any, future: Any = None) -> Any:
            start, cpu = tl.now(), time.thread_time()
            try:
                return original(self, request, future)
            finally:
                tl.log(tl.device(), f"wait {_STAGE[request.stage]}", start, tl.now(),
                       cpu=time.thread_time() - cpu)
        return run

    def server_step(original: Any) -> Any:
        def run(rounds: Any, device: Any, request: Any) -> Any:
            start, cpu = tl.now(), time.thread_time()
            ready = None
            try:
                reply = original(rounds, device, request)
                ready = reply.ready
                return reply
            finally:
                tl.log(device.device_id, f"server {_STAGE[request.stage]}", start, tl.now(),
                       ready=ready, cpu=time.thread_time() - cpu)
        return run

    def server_masked(original: Any) -> Any:
        def run(rounds: Any, device: Any, header: Any, chunks: Any) -> Any:
            start, cpu = tl.now(), time.thread_time()
            try:
                return original(rounds, device, header, chunks)
            finally:
                tl.log(device.device_id, "server masked", start, tl.now(),
                       cpu=time.thread_time() - cpu)
        return run

    def arrival(what: str) -> Any:
        def wrapper(original: Any) -> Any:
            def run(self: Any, device: Any, *args: Any) -> Any:
                who = device if isinstance(device, str) else device.device_id
                start = tl.now()
                try:
                    return original(self, device, *args)
                finally:
                    tl.log(who, f"arrived {what}", start, tl.now())
            return run
        return wrapper

    def snapshot(what: str, inner: Any) -> Any:
        def wrapper(original: Any) -> Any:
            wrapped = inner(original)

            def run(*args: Any, **kwargs: Any) -> Any:
                if what == "commit":
                    tl.cpu[what] = (thread_cpu(), time.process_time())
                    tl.native[what] = native_cpu()
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    if what != "commit":
                        tl.cpu[what] = (thread_cpu(), time.process_time())
                        tl.native[what] = native_cpu()
            return run
        return wrapper

    def accepted(original: Any) -> Any:
        def run(self: Any, assignment: Any, *args: Any, **kwargs: Any) -> Any:
            start = tl.now()
            try:
                return original(self, assignment, *args, **kwargs)
            finally:
                tl.log(assignment.device_id, "arrived plain", start, tl.now())
        return run

    def advance(original: Any) -> Any:
        def run(rounds: Any, secure: Any, stage: int) -> Any:
            name = secure_round.STAGE_NAMES[stage]
            tl.cpu[name] = (thread_cpu(), time.process_time())
            tl.native[name] = native_cpu()
            tl.log("server", f"open {name}", tl.now(), cpu=time.process_time())
            return original(rounds, secure, stage)
        return run

    def server_span(what: str) -> Any:
        def wrapper(original: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                start = tl.now()
                try:
                    return original(*args, **kwargs)
                finally:
                    tl.log("server", what, start, tl.now(), cpu=time.process_time())
            return run
        return wrapper

    def thread_run(original: Any) -> Any:
        def run(self: threading.Thread) -> None:
            try:
                original(self)
            finally:  # a thread that ends in the round: its CPU, by kind
                tl.log("thread", "ended", tl.now(), kind=_kind(self.name),
                       cpu=time.thread_time())
        return run

    patches = [
        _wrap(threading.Thread, "run", thread_run),
        _wrap(client_daemon.Daemon, "train", train),
        _wrap(client_secure.SecureTask, "_until_ready", step),
        _wrap(client_daemon, "download", device_span("download")),
        _wrap(client_daemon, "compute_update", device_span("training")),
        _wrap(client_daemon, "submit", device_span("plain upload")),
        _wrap(client_secure.quantize, "encode_blocks", device_span("quantize")),
        _wrap(client_secure.SecureTask, "_send", device_span("masked upload")),
        _wrap(client_secure.SecureTask, "__init__", device_span("secure task setup")),
        _wrap(client_secure, "pseudo_gradient", device_span("pseudo-gradient")),
        _wrap(client_daemon, "encode_update", device_span("plain encode")),
        _wrap(client_daemon, "decode_weights", device_span("decode model")),
        _wrap(secure_service, "secure_step", server_step),
        _wrap(secure_service, "submit_masked", server_masked),
        _wrap(secure_round, "_advance", advance),
        _wrap(Rounds, "open_round", snapshot("open round", server_span("open round"))),
        _wrap(server_driver, "commit_round", snapshot("commit", server_span("commit"))),
        _wrap(Rounds, "accept", accepted),
    ]
    patches += [_wrap(MaskingDevice, m, device_span(f"compute {m}"))
                for m in ("share", "premask", "mask", "reveal")]
    patches += [_wrap(MaskedSum, m, arrival(what)) for m, what in (
        ("add_shares", "share"), ("add_masked", "masked"), ("add_reveal", "reveal"))]
    patches += [_wrap(MaskedSum, "unmask", server_span("unmask")),
                _wrap(StateStore, "add_metrics", server_span("metrics write"))]
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


_STAGE = {2: "share", 3: "unmask", 4: "reveal"}  # stage 1's keys: with the polls


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: opened, last arrival and closed; per device phase: median and max."""
    def first(what: str) -> float | None:
        times = [e["t"] for e in events if e["what"] == what]
        return min(times) if times else None

    spans: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    for e in events:
        if "end" in e:
            spans.setdefault(e["what"], []).append(e["end"] - e["t"])
            if e["who"] not in ("server", "thread") and "cpu" in e:
                cpu[e["what"]] = cpu.get(e["what"], 0.0) + e["cpu"]
    phases = {what: {"n": len(v), "median_s": statistics.median(v), "max_s": max(v),
                     "sum_s": sum(v), "cpu_s": cpu.get(what)}
              for what, v in sorted(spans.items())}
    tasks = sorted(e["t"] for e in events if e["what"] == "task")
    stages = []
    # (stage's arrival event, the server event that closes it, the device wait it ends)
    for name, arrived, closes, wakes in (
            ("share keys", "arrived share", "open masked input", "wait share"),
            ("masked input", "arrived masked", "open unmasking", "wait unmask"),
            ("unmasking", "arrived reveal", "open done", "wait reveal")):
        arrivals = [e for e in events if e["what"] == arrived]
        by_device: dict[str, float] = {}
        for e in arrivals:
            by_device[e["who"]] = min(by_device.get(e["who"], e["t"]), e["t"])
        closed = first(closes)
        woken = [e["end"] for e in events if e["what"] == wakes]
        last = max(by_device.items(), key=lambda kv: kv[1]) if by_device else ("-", None)
        stages.append({
            # The share stage opens with the round (its tasks carry the roster).
            "stage": name, "opened": first(f"open {name}") or first("open round"),
            "first_arrival": min(by_device.values(), default=None),
            "last_arrival": last[1], "last_device": last[0], "closed": closed,
            "close_after_last_s": (closed - last[1]) if closed is not None and last[1]
            is not None else None,
            "devices_woken_by": max(woken, default=None)})
    plain = [e["end"] for e in events if e["what"] == "arrived plain"]
    return {"first_task": tasks[0] if tasks else None,
            "last_plain_update": max(plain, default=None),
            "last_task": tasks[-1] if tasks else None, "stages": stages, "phases": phases,
            "server": [e for e in events if e["who"] == "server" and "cpu" in e
                       and e["what"] != "metrics write"]}


def run(clients: int, secure: bool, task: str = "digits-mlp", backend: str = "threads"
        ) -> dict[str, Any]:
    """One round of fedge simulate (task) with the hooks on; its summary and events."""
    from fedge.config import SimulateConfig
    from fedge.simulations.runner import simulate

    timeline = Timeline()
    with (tempfile.TemporaryDirectory() as out, hooked(timeline),
          hosts_hooked(timeline.t0) as events):
        config = SimulateConfig(task=task, clients=clients, rounds=1, out=out, edge=False,
                                backend=backend, secure_aggregation=secure,
                                round_timeout_s=600.0)
        report = simulate(config)
        timeline.events += host_events(events)  # none with threads
    row = report["rounds"][-1]
    marks = sorted(timeline.cpu.items(), key=lambda kv: kv[1][1])  # by process CPU
    times = {(e["what"] if e["what"] == "open round" else e["what"].removeprefix("open ")):
             e["t"] for e in timeline.events
             if e["who"] == "server" and e["what"].startswith("open ")}
    times["commit"] = max(e["t"] for e in timeline.events if e["what"] == "commit")
    stages = {}
    for (a, (start, p0)), (b, (end, p1)) in itertools.pairwise(marks):
        ended = [e for e in timeline.events if e["what"] == "ended" and "host" not in e
                 and times.get(a, 0.0) <= e["t"] <= times.get(b, 1e9)]
        stages[f"{a} -> {b}"] = cpu_by_kind(start, end, p1 - p0, ended)
        n0, n1 = timeline.native.get(a, {}), timeline.native.get(b, {})
        stages[f"{a} -> {b}"].update({f"C {k}": v - n0.get(k, 0.0) for k, v in n1.items()
                                      if v - n0.get(k, 0.0) > 0})
    (start, p0), (end, p1) = timeline.cpu["open round"], timeline.cpu["commit"]
    ended = [e for e in timeline.events if e["what"] == "ended" and "host" not in e
             and times["open round"] <= e["t"] <= times["commit"]]
    return {"clients": clients, "secure": secure, "task": task, "backend": backend,
            "t0_monotonic": timeline.t0, "round_s": row["seconds"],
            "cpu_s": p1 - p0, "cpu_by_thread_kind": cpu_by_kind(start, end, p1 - p0, ended),
            "cpu_by_stage": stages,
            "summary": summarize(timeline.events), "events": timeline.events}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def show(result: dict[str, Any]) -> None:
    """Prints a result's summary."""
    s = result["summary"]
    kind = "secure" if result["secure"] else "plain"
    print(f"\n{kind} round, {result['task']}, {result['clients']} devices "
          f"({result.get('backend', 'threads')}): "
          f"{result['round_s']:.2f} s "
          f"(timeline s: first task {_fmt(s['first_task'])}, last task "
          f"{_fmt(s['last_task'])}, last plain update folded {_fmt(s['last_plain_update'])})")
    if result["secure"]:
        print(f"{'stage':<15} {'opened':>7} {'1st in':>7} {'last in':>7} {'closed':>7} "
              f"{'close-last':>10} {'all woken':>9}  last device")
        for st in s["stages"]:
            print(f"{st['stage']:<15} {_fmt(st['opened']):>7} {_fmt(st['first_arrival']):>7} "
                  f"{_fmt(st['last_arrival']):>7} {_fmt(st['closed']):>7} "
                  f"{_fmt(st['close_after_last_s']):>10} {_fmt(st['devices_woken_by']):>9}  "
                  f"{st['last_device']}")
    print(f"{'phase (wall s; device CPU s)':<28} {'n':>4} {'median':>7} {'max':>7} {'sum':>8} "
          f"{'CPU sum':>8}")
    for what, p in s["phases"].items():
        print(f"{what:<28} {p['n']:>4} {p['median_s']:>7.3f} {p['max_s']:>7.3f} "
              f"{p['sum_s']:>8.2f} {_fmt(p['cpu_s']):>8}")
    print(f"process CPU from round open to commit: {result['cpu_s']:.2f} s; by thread: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_by_thread_kind"].items()))
    for stage, kinds in result["cpu_by_stage"].items():
        print(f"  CPU {stage}: " + ", ".join(f"{k} {v:.2f}" for k, v in kinds.items()
                                             if abs(v) >= 0.01))
    cpu0 = s["server"][0]["cpu"] if s["server"] else 0.0
    for c in s["server"]:
        print(f"{c['what']:<22} at {c['t']:7.3f}  process CPU since round open "
              f"{c['cpu'] - cpu0:6.2f} s")


def main(argv: list[str] | None = None) -> int:
    """Runs the round(s), prints the summaries and writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.secure_timeline")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--plain", action="store_true", help="also a plain round")
    parser.add_argument("--task", default="digits-mlp",
                        help="the task (bench.wide_task:million: 1M parameters)")
    parser.add_argument("--backend", choices=("threads", "processes"), default="threads")
    parser.add_argument("--out", default="bench/results/secure_timeline.json")
    args = parser.parse_args(argv)
    results = [run(args.clients, True, args.task, args.backend)]
    if args.plain:
        results.append(run(args.clients, False, args.task, args.backend))
    for r in results:
        show(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
