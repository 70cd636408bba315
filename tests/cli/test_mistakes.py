"""A new operator's mistakes, made through the real ``fedge`` command (a subprocess):
each ends in exit 2 and one line on stderr that names the problem and what to do, with
no traceback. (tests/fedge/test_cli.py holds the option and config mistakes; these are
the ones about files, ports, devices, state dirs and data.)"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fedge.cli import main
from tests.certs import Authority
from tests.processes import FEDGE

# A log record (kept: a skipped file's reason is worth a line of its own) as opposed to
# what the command itself says when it stops.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")


def fails_in_one_line(cwd: Path, *argv: str, timeout: float = 90) -> str:
    """Runs ``fedge argv`` in cwd; asserts exit 2 and one line that is not a log record
    (and no ERROR record, no traceback); returns that line."""
    return one_line(subprocess.run([*FEDGE, *argv], cwd=cwd, capture_output=True, text=True,
                                   timeout=timeout))


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    """Asserts that a finished command failed in one line, exit 2; returns the line."""
    lines = [line for line in run.stderr.splitlines() if not LOG_RECORD.match(line)]
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and " ERROR " not in run.stderr, run.stderr
    assert len(lines) == 1 and lines[0].startswith("fedge: error: "), run.stderr
    return lines[0]


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A directory with the things people point fedge at by mistake."""
    return make_place(tmp_path)


def make_place(tmp_path: Path) -> Path:
    """Fills tmp_path with the things people point fedge at by mistake."""
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not data\n")
    (tmp_path / "junk" / "blob.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "empty").mkdir()
    (tmp_path / "unlabelled").mkdir()
    header = ",".join(f"p{i}" for i in range(64))
    (tmp_path / "unlabelled" / "a.csv").write_text(f"{header}\n{','.join(['1'] * 64)}\n")
    (tmp_path / "wide").mkdir()
    np.savez(tmp_path / "wide" / "d.npz", x=np.zeros((10, 3), np.float32),
             y=np.zeros(10, np.int64))
    (tmp_path / "good").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "good" / "d.npz", x=rng.random((20, 64), dtype=np.float32) * 16,
             y=rng.integers(0, 10, 20))
    (tmp_path / "afile").write_text("a regular file, not a directory\n")
    (tmp_path / "notdb").mkdir()
    (tmp_path / "notdb" / "fedge.db").write_text("not a database\n")
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    return tmp_path


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


CLIENT = ("client", "--insecure", "--server", "127.0.0.1:1")


# The real command, one process a row: each command group, the torch-importing
# client and simulate among them (a start that imports torch costs ~4 s of CPU).
MISTAKES = [
    ((*CLIENT, "--data", "junk"), "no usable examples in junk (2 file(s) skipped"),
    (("client", "--data", "good", "--tls-ca", "missing.pem"), "cannot read the TLS CA"),
    ((*CLIENT[:2], "--data", "good", "--server", "localhost"), "server must be HOST:PORT"),
    (("server", "--insecure", "--state-dir", "afile/state"),
     "cannot use the state dir afile/state: Not a directory; give --state-dir"),
    (("server", "--tls-cert", "bad.pem", "--tls-key", "bad.pem", "--state-dir", "s"),
     "TLS certificate bad.pem is not a PEM certificate"),
    (("tokens", "create", "--device", "d1", "--state-dir", "afile/state"),
     "Not a directory; give --state-dir a directory this user can create and write"),
    (("tokens", "list", "--state-dir", "afile"), "state dir afile: File exists"),
    (("tokens", "revoke", "--device", "d1", "--state-dir", "notdb"),
     "file is not a database"),
    (("tokens", "create", "--device", "bad!id", "--state-dir", "s"),
     "device id 'bad!id' must be"),
    (("edge", "build", "--state-dir", "notdb", "--out", "o"), "file is not a database"),
    (("data", "inspect", "nowhere"), "nowhere does not exist"),
    (("status", "--server", "127.0.0.1:1", "--token", "t", "--tls-ca", "missing.pem"),
     "cannot read the TLS CA"),
    (("status", "--state-dir", "afile"), "cannot read afile/status.json"),
    (("data", "partition", "--clients", "2", "--out", "afile"),
     "cannot write the partitions under --out afile: Not a directory"),
    (("simulate", "--lr", "-0.1", "--out", "s"), "lr must be >= 0, got -0.1"),
    (("edge", "verify", "--public-key", "missing.pem", "nothing.fedge"),
     "cannot read the artifact at nothing.fedge"),
]
# The same boundary (fedge.cli.main, what the process runs) called in this process:
# the rows above already show a real process ends a mistake of each command in one
# line, exit 2; these are more mistakes of the same commands, most of them past a
# torch import (65 s of the suite's CPU as processes).
HERE = [
    ((*CLIENT, "--data", "unlabelled"), "no usable examples in unlabelled"),
    ((*CLIENT, "--data", "wide"), "none fits task digits-mlp"),
    ((*CLIENT, "--data", "nowhere"), "--data nowhere does not exist"),
    ((*CLIENT, "--data", "empty"), "no usable examples in empty (no files there)"),
    ((*CLIENT, "--data", "good", "--device", "cuda"), "CUDA is not available here"),
    ((*CLIENT, "--data", "good", "--task", "nosuch"), "unknown task 'nosuch'"),
    ((*CLIENT, "--inference-only"), "inference_only needs trust_key"),
    (("server", "--insecure", "--state-dir", "notdb"),
     "cannot use the state dir notdb: file is not a database"),
    (("server", "--insecure", "--task", "nosuch", "--state-dir", "s"), "unknown task"),
    (("server", "--tls-cert", "nope.crt", "--tls-key", "nope.key", "--state-dir", "s"),
     "cannot read the TLS key or certificates"),
    (("edge", "build", "--state-dir", "junk", "--out", "o"), "is not a server state dir"),
    (("data", "partition", "--clients", "100000", "--out", "p"),
     "cannot split 1257 examples among 100000 clients"),
    ((*CLIENT, "--data", "good", "--trust-key", "missing.pem"),
     "--trust-key missing.pem is not a file; give the server's public key"),
    (("simulate", "--clients", "100000", "--out", "s"),
     "cannot split 1257 examples among 100000 clients"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory,
             ) -> dict[int, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every mistake of the table, each in its own copy of the place, run four at a time:
    a command spends most of its life importing, and one after another they took two
    minutes of the suite."""
    template = make_place(tmp_path_factory.mktemp("place"))

    def run(index: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
        cwd = tmp_path_factory.mktemp(f"mistake{index}")
        shutil.copytree(template, cwd, dirs_exist_ok=True)
        return cwd, subprocess.run([*FEDGE, *MISTAKES[index][0]], cwd=cwd,
                                   capture_output=True, text=True, timeout=180)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(range(len(MISTAKES)), pool.map(run, range(len(MISTAKES))),
                        strict=True))


@pytest.mark.parametrize("index", range(len(MISTAKES)),
                         ids=[" ".join(argv)[:60] for argv, _ in MISTAKES])
def test_a_mistake_ends_in_one_line_and_exit_2(
        outcomes: dict[int, tuple[Path, subprocess.CompletedProcess[str]]],
        index: int) -> None:
    cwd, run = outcomes[index]
    assert MISTAKES[index][1] in one_line(run)
    # Nothing was made on the way to the mistake.
    assert not (cwd / "s").exists() and not (cwd / "p").exists()


@pytest.mark.parametrize("index", range(len(HERE)),
                         ids=[" ".join(argv)[:60] for argv, _ in HERE])
def test_more_mistakes_end_in_one_line_and_2_from_main(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        index: int) -> None:
    argv, message = HERE[index]
    monkeypatch.chdir(make_place(tmp_path))
    code = main(list(argv))
    assert message in one_line(subprocess.CompletedProcess(argv, code, "",
                                                           capsys.readouterr().err))
    assert not (tmp_path / "s").exists() and not (tmp_path / "p").exists()


def test_metrics_port_in_use_is_named_by_client_and_server(place: Path,
                                                           held_port: int) -> None:
    line = fails_in_one_line(place, *CLIENT, "--data", "good", "--metrics-port",
                             str(held_port))
    assert f"cannot serve metrics on 127.0.0.1:{held_port} (--metrics-port)" in line
    line = fails_in_one_line(place, "server", "--insecure", "--host", "127.0.0.1",
                             "--state-dir", "state", "--metrics-port", str(held_port))
    assert f"127.0.0.1:{held_port} for --metrics-port: it is already in use" in line
    assert not (place / "state").exists()  # checked before anything was made


def test_server_port_in_use_is_named_before_anything_is_made(place: Path,
                                                             held_port: int) -> None:
    line = fails_in_one_line(place, "server", "--insecure", "--host", "127.0.0.1",
                             "--port", str(held_port), "--state-dir", "state")
    assert f"cannot listen on 127.0.0.1:{held_port} for gRPC: it is already in use" in line
    assert not (place / "state").exists()


def test_tls_files_that_do_not_fit_are_named_before_anything_is_made(
        place: Path) -> None:
    ca = Authority(place / "pki")
    one, other = ca.issue("one", server=True), ca.issue("other", server=True)
    line = fails_in_one_line(place, "server", "--tls-cert", str(one.cert), "--tls-key",
                             str(other.key), "--state-dir", "state")
    assert f"TLS certificate {one.cert} does not match the key {other.key}" in line
    line = fails_in_one_line(place, "server", "--tls-cert", str(one.cert), "--tls-key",
                             "bad.pem", "--state-dir", "state")
    assert "TLS key bad.pem is not an unencrypted PEM private key" in line
    line = fails_in_one_line(place, "server", "--tls-cert", str(one.cert), "--tls-key",
                             str(one.key), "--tls-client-ca", "bad.pem", "--state-dir",
                             "state")
    assert "TLS client CA bad.pem is not a PEM certificate" in line
    assert not (place / "state").exists()


@pytest.mark.parametrize("side", ["insecure", "wrong CA"])
def test_a_client_misconfigured_for_tls_stops_within_30_s_naming_tls(
        place: Path, side: str) -> None:
    ca = Authority(place / "pki")
    pair = ca.issue("server", server=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [*FEDGE, "server", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key),
         "--host", "127.0.0.1", "--port", str(port), "--state-dir", "state"],
        cwd=place, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        for line in server.stderr:  # serving once it says so
            if "serving task" in line:
                break
        tls = (["--insecure"] if side == "insecure" else
               ["--tls-ca", str(Authority(place / "other", "other CA").cert)])
        started = time.monotonic()
        line = fails_in_one_line(place, "client", "--server", f"127.0.0.1:{port}",
                                 "--data", "good", *tls, timeout=60)
        assert time.monotonic() - started < 30
        assert line.startswith("fedge: error: TLS: ")
        assert ("drop --insecure" if side == "insecure" else "CERTIFICATE_VERIFY_FAILED") \
            in line
    finally:
        server.kill()
        server.wait()
