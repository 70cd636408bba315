"""The benchmarks' plumbing: the Flower App they generate is one Flower accepts, the
round arithmetic, the tables, and a real (tiny) fedge deployment run of round_latency.
No timing is asserted here: speed targets live in the benchmarks themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from bench import flower_deploy, round_latency, run_all, simulate_wall


def test_generated_flower_app_is_valid(tmp_path):
    pytest.importorskip("flwr")
    from flwr.common.config import validate_config

    app = round_latency.write_flower_app(tmp_path / "app", {
        "num-server-rounds": 3, "nodes": 4, "task": "digits-mlp", "seed": 0, "epochs": 2,
        "lr": 0.1, "batch-size": 32, "timestamps": str(tmp_path / "t.json")})
    config = tomllib.loads((app / "pyproject.toml").read_text())
    sys.path.insert(0, str(app))
    try:
        valid, errors, _ = validate_config(config, check_module=True, project_dir=app)
    finally:
        sys.path.remove(str(app))
        for name in [m for m in sys.modules if m.startswith(round_latency.APP_PACKAGE)]:
            del sys.modules[name]
    assert valid, errors
    assert config["tool"]["flwr"]["app"]["config"]["batch-size"] == 32
    assert config["tool"]["flwr"]["app"]["config"]["timestamps"].endswith("t.json")
    # the installed flwr, so that no release's runtime would try to install another
    assert config["project"]["dependencies"] == [f"flwr=={round_latency.flwr_version()}"]


@pytest.mark.parametrize("isolation", flower_deploy.ISOLATIONS)
def test_flower_deployment_speaks_the_installed_programs_options(tmp_path, isolation):
    pytest.importorskip("flwr")
    deployment = flower_deploy.programs([tmp_path / "a", tmp_path / "b"], isolation,
                                        round_latency.flwr_version())
    assert len(deployment.supernodes) == 2
    assert len(deployment.superexecs) == (2 if isolation == "process" else 0)
    for argv in [deployment.superlink, deployment.supernodes[0],
                 *deployment.superexecs[:1]]:
        usage = subprocess.run([argv[0], "--help"], capture_output=True, text=True,
                               timeout=60).stdout
        for option in (a for a in argv[1:] if a.startswith("--")):
            assert option in usage, f"{argv[0]} has no {option}"


def test_flower_deployment_follows_the_release_cli(tmp_path):
    old = flower_deploy.programs([tmp_path], "process", "1.30.0")
    new = flower_deploy.programs([tmp_path], "process", "1.41.0")
    assert "--serverappio-api-address" in old.superlink
    assert "--plugin-type" in old.superexecs[0]
    # 1.41: one HTTP port for Fleet and Control, and no app installs at run time
    assert f"127.0.0.1:{new.control}" in new.supernodes[0]
    assert "--disable-runtime-dependency-installation" in new.superlink
    runtime = new.supernodes[0][new.supernodes[0].index("--port") + 1]
    assert new.superexecs[0][-1] == f"127.0.0.1:{runtime}"
    assert flower_deploy.release("1.41.0") == (1, 41) > flower_deploy.release(None)


def test_rounds_are_measured_from_one_end_to_the_next():
    ends = {0: 100.0, 1: 110.0, 2: 110.5, 3: 111.5, 4: 111.75}
    durations = round_latency.per_round(ends)
    assert durations == {1: 10.0, 2: 0.5, 3: 1.0, 4: 0.25}
    assert round_latency.steady(durations) == 0.5  # round 1 (start-up) left out
    with pytest.raises(RuntimeError, match="at least 2 rounds"):
        round_latency.steady({1: 3.0})


def test_overhead_is_each_round_less_its_slowest_training():
    durations = {1: 9.0, 2: 2.0, 3: 2.5, 4: 3.0}
    slowest = {1: 1.0, 2: 1.9, 3: 2.0, 4: 2.9, 5: 7.0}  # 5: a round never timed
    assert round_latency.overheads(durations, slowest) == pytest.approx(
        {1: 8.0, 2: 0.1, 3: 0.5, 4: 0.1})
    assert round_latency.overheads(durations, {}) == {}


def test_tables_show_flower_over_fedge():
    rows = [{"system": "fedge", "clients": 4, "s_per_round": 0.1, "first_round_s": 2.0,
             "wall_s": 9.0, "accuracy": 0.9},
            {"system": "flower", "clients": 4, "s_per_round": 6.0, "first_round_s": 9.0,
             "wall_s": 60.0, "accuracy": 0.9, "overhead_s": 5.5, "overhead_share": 0.9},
            {"system": "flower-process", "clients": 4, "s_per_round": 3.0,
             "first_round_s": 9.0, "wall_s": 30.0, "accuracy": 0.9}]
    lines = round_latency.table(rows).splitlines()
    assert "60.0x" in lines[1] and "30.0x" in lines[3]
    assert "5.500" in lines[2] and "90.0%" in lines[2]
    assert round_latency.ratios(rows, "flower-process") == {"4": pytest.approx(30.0)}
    assert round_latency.ratios(rows) == {"4": pytest.approx(60.0)}
    sim = [{"system": "fedge simulate", "clients": 4, "rounds": 3, "wall_s": 8.0,
            "accuracy": 0.9},
           {"system": "flower run_simulation", "clients": 4, "rounds": 3, "wall_s": 20.0,
            "accuracy": 0.9}]
    assert "2.5x" in simulate_wall.table(sim)


def test_run_all_commands_write_where_they_are_collected(tmp_path):
    for name in run_all.available():
        for quick in (False, True):
            argv, out = run_all.command(name, quick, tmp_path)
            assert argv[:3] == [sys.executable, "-m", f"bench.{name}"]
            assert str(out) in argv or str(out.parent) in argv
    assert {"aggregate", "edge", "round_latency", "simulate_wall"} <= set(run_all.available())


@pytest.mark.slow
def test_round_latency_runs_fedge_deployment(tmp_path):
    out = tmp_path / "latency.json"
    assert round_latency.main(["--clients", "2", "--rounds", "3", "--systems", "fedge",
                               "--out", str(out), "--timeout", "120"]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["system"] == "fedge" and row["clients"] == 2
    assert sorted(row["round_s"]) == ["1", "2", "3"]
    assert row["s_per_round"] > 0 and row["accuracy"] > 0.5


def test_aggregate_pairs_each_fedge_method_with_flower_doing_the_same_work() -> None:
    """Both timers of a pair decode (from the wire) or neither does (decoded), and every
    method runs; the table compares each fedge row with its own peer only."""
    from bench import aggregate

    assert aggregate.PEERS == {"fedge intake+fold": "flower inplace",
                               "fedge fold": "flower aggregate"}
    methods = [m for m in aggregate.METHODS
               if m not in aggregate.FLOWER or aggregate._flower_available()]
    rows = [aggregate.run_one(m, 3, 1) for m in methods]
    assert all(r["seconds"] > 0 and r["k"] == 3 for r in rows)
    table = aggregate._table(rows).splitlines()
    if "flower inplace" in methods:  # a ratio for the paired rows, none for the rest
        assert table[1].split()[1:3] == ["fedge", "intake+fold"] and table[1].endswith("x")
        assert table[-1].split()[1:3] == ["numpy", "copy"] and table[-1].endswith("-")


@pytest.mark.slow
def test_gpu_bench_measures_the_real_trainer_and_says_when_there_is_no_gpu(tmp_path):
    import torch

    from bench import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--examples", "32", "--epochs", "1", "--batch", "16",
                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["device"].split(":")[0], r["precision"]) for r in rows] == [
        ("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")]
    assert rows[0]["samples_per_s"] > 0 and rows[0]["examples"] == 32
    measured = [r for r in rows[1:] if "skipped" not in r]
    assert bool(measured) == torch.cuda.is_available()


def test_fetch_ceiling_reads_both_streams_every_way(tmp_path):
    from bench import fetch_ceiling

    out = tmp_path / "ceiling.json"
    fetch_ceiling.main(["--mb", "4", "--repeats", "1", "--out", str(out)])
    rates = json.loads(out.read_text())["mb_s"]
    assert {chunks: sorted(row) for chunks, row in rates.items()} == {
        chunks: sorted(fetch_ceiling.READS) for chunks in ("raw", "ModelChunk")}
    assert all(rate > 0 for row in rates.values() for rate in row.values())


@pytest.mark.slow
def test_secure_bench_runs_a_plain_and_a_secure_grpc_round_per_task(tmp_path):
    from bench import secure

    out = tmp_path / "secure.json"
    assert secure.main(["--ns", "3", "--sizes", "64", "--grpc", "3", "--flower-max", "0",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["n"], r["size"]) for r in result["protocol"]] == [(3, 64)]  # sum checked exact
    rows = result["grpc"]
    assert [(r["task"], r["backend"], r["clients"], r["secure"]) for r in rows] == [
        ("digits-mlp", "threads", 3, False), ("digits-mlp", "threads", 3, True)]
    assert all(r["round_s"] > 0 for r in rows) and rows[1]["device_mask_cpu_s"] > 0
    assert rows[1]["up_bytes_per_device"] > rows[0]["up_bytes_per_device"]  # keys, shares
