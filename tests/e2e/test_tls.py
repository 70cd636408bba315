"""Runs over TLS and mutual TLS, with certificates from a throwaway CA."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from fedge.protos import fedge_pb2, fedge_pb2_grpc
from tests.certs import Authority
from tests.fleet import Fleet


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


def test_a_run_over_tls(fleet: Fleet, ca: Authority) -> None:
    pair = ca.issue("server", server=True)
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=1, insecure=False, tls_cert=str(pair.cert),
                          tls_key=str(pair.key))
    port = server.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}", insecure=False, tls_ca=str(ca.cert))
    records = server.wait(timeout=60)
    fleet.join_clients()
    assert [r.round for r in records] == [0, 1] and records[1].clients == 2


def test_mtls_admits_certified_devices_and_refuses_the_rest(fleet: Fleet,
                                                            ca: Authority) -> None:
    pair = ca.issue("server", server=True)
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=1, insecure=False, tls_cert=str(pair.cert),
                          tls_key=str(pair.key), tls_client_ca=str(ca.cert))
    port = server.start()
    address = f"127.0.0.1:{port}"

    # No client certificate, or one from another CA: the handshake fails.
    rogue = Authority(fleet.tmp / "rogue-pki", "rogue CA").issue("rogue", server=False)
    for key, cert in ((None, None), (rogue.key.read_bytes(), rogue.cert.read_bytes())):
        credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes(), private_key=key,
                                                   certificate_chain=cert)
        with grpc.secure_channel(address, credentials) as channel:
            stub = fedge_pb2_grpc.FederationStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Join(fedge_pb2.JoinRequest(device_id="rogue"), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE

    for k, d in enumerate(dirs):
        client = ca.issue(f"dev-{k}", server=False)
        fleet.client(port, d, f"dev-{k}", insecure=False, tls_ca=str(ca.cert),
                     tls_cert=str(client.cert), tls_key=str(client.key))
    records = server.wait(timeout=60)
    fleet.join_clients()
    assert records[-1].round == 1 and records[-1].clients == 2
