"""Device tokens: issued once, stored as hashes, revocable, visible to a running server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fedge.cli import main
from fedge.errors import FedgeError
from fedge.refusals import Unauthenticated
from fedge.server.tokens import TokenStore, hash_token


def test_a_token_authenticates_its_device_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token = store.create("dev-1")
    assert store.identify(token) == ("dev-1", "device")
    raw = (tmp_path / "fedge.db").read_bytes() + (tmp_path / "fedge.db-wal").read_bytes()
    assert token.encode() not in raw and hash_token(token).encode() in raw
    with pytest.raises(Unauthenticated, match="unknown"):
        store.identify(token[:-2] + "xx")
    store.close()


def test_recreating_replaces_and_revoking_refuses(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    old = store.create("dev-1")
    new = store.create("dev-1")
    with pytest.raises(Unauthenticated):
        store.identify(old)
    other = TokenStore(tmp_path)  # another process: `fedge tokens revoke`
    other.revoke("dev-1")
    with pytest.raises(Unauthenticated, match="revoked"):
        store.identify(new)
    with pytest.raises(FedgeError, match="no active token"):
        other.revoke("dev-1")
    assert [(i.device_id, i.active) for i in store.list()] == [("dev-1", False)]
    with pytest.raises(FedgeError, match="device id"):
        store.create("../../etc/passwd")
    store.close()
    other.close()


def test_the_tokens_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    assert main(["tokens", "create", "--state-dir", state, "--device", "cam-7"]) == 0
    out, err = capsys.readouterr()
    token = out.strip().splitlines()[-1]
    assert token.startswith("fdg_") and "shown once" in err
    assert main(["tokens", "list", "--state-dir", state]) == 0
    out, _ = capsys.readouterr()
    assert "cam-7" in out and "active" in out and token not in out
    assert main(["tokens", "revoke", "--state-dir", state, "--device", "cam-7"]) == 0
    assert main(["tokens", "revoke", "--state-dir", state, "--device", "cam-7"]) == 2
    _, err = capsys.readouterr()
    assert "no active token" in err
    with sqlite3.connect(Path(state) / "fedge.db") as db:
        assert db.execute("SELECT revoked_at IS NOT NULL FROM tokens").fetchone() == (1,)


def test_tokens_made_in_one_batch_work_alone_and_replace_earlier_ones(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    earlier = store.create("dev-1")
    tokens = store.create_many(["dev-0", "dev-1", "dev-2"])
    assert len(set(tokens)) == 3
    assert [store.identify(t) for t in tokens] == [(f"dev-{k}", "device") for k in range(3)]
    with pytest.raises(Unauthenticated):
        store.identify(earlier)
    with pytest.raises(FedgeError, match="device id"):
        store.create_many(["dev-3", "../escape"])
    assert sorted(i.device_id for i in store.list()) == ["dev-0", "dev-1", "dev-2"]  # no dev-3
    store.close()
