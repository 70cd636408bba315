"""The command line: every option of before is still there, each declared setting is an
option whose help shows its declared default, and every mistake ends in one line, exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fedge import __version__
from fedge.cli import build_parser, main
from fedge.cli.options import help_of
from fedge.config import ClientConfig, ServerConfig, SimulateConfig
from fedge.config.settings import declared

# Every option the command had before settings were declared once (fedge 0.1.0's
# cli.py), by command: scripts, unit files and the guide use these spellings.
OPTIONS = {
    "": "--version --verbose --log-format",
    "server": "--config --task --host --port --rounds --min-clients --fraction "
    "--round-timeout --epochs --lr --batch-size --seed --state-dir --insecure --tls-cert "
    "--tls-key --poll-seconds --max-update-bytes --allow-anonymous --tls-client-ca "
    "--quorum-fraction --max-update-norm --norm-action --max-examples --max-uploads "
    "--rate-limit --metrics-port --max-workers --strategy --update --encoding --server-lr "
    "--server-momentum --mu --trim --byzantine-f --topk-fraction --no-edge --edge-every",
    "client": "--config --server --task --data --device-id --insecure --tls-ca --tls-cert "
    "--tls-key --token --metrics-port --device --poll-seconds --label-column "
    "--debug-report-files --trust-key --model-dir --inference-only",
    "data partition": "--task --clients --partition --alpha --seed --out --scatter",
    "data inspect": "--task --json --label-column --x-key --y-key",
    "simulate": "--config --task --clients --rounds --partition --alpha --seed --out "
    "--epochs --lr --batch-size --fraction --scatter --strategy --update --encoding "
    "--server-lr --server-momentum --mu --trim --byzantine-f --topk-fraction --no-edge "
    "--scenario --dropout --stragglers --straggler-delay --straggler-distribution "
    "--late-joiners --join-round --leavers --leave-round --hostile-clients --attack "
    "--attack-factor --bandwidth-kbps --round-timeout --quorum-fraction --min-clients "
    "--backend --workers --ray-address",
    "tokens create": "--role --device --state-dir",
    "tokens revoke": "--device --state-dir",
    "tokens list": "--state-dir",
    "status": "--server --state-dir --token --insecure --tls-ca --tls-cert --tls-key "
    "--rounds --json",
    "edge build": "--state-dir --round --task --out",
    "edge verify": "--public-key",
    "edge predict": "--public-key --scores",
}
# The options whose key is not the option's name with underscores.
KEYS = {"--round-timeout": "round_timeout_s", "--straggler-delay": "straggler_delay_s",
        "--no-edge": "edge"}
COMMANDS = {"server": ServerConfig, "client": ClientConfig, "simulate": SimulateConfig}


def _parsers(parser: argparse.ArgumentParser, path: str = "",
             ) -> dict[str, argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_parsers(sub, f"{path} {name}".strip()))
    return found


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def test_every_option_of_before_is_still_there_with_its_key() -> None:
    parsers = _parsers(build_parser())
    for command, flags in OPTIONS.items():
        options = _options(parsers[command])
        for flag in flags.split():
            assert flag in options, f"fedge {command} lost {flag}"
            if command in COMMANDS and flag != "--config":
                key = KEYS.get(flag, flag[2:].replace("-", "_"))
                assert options[flag].dest == key, (command, flag)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_declared_setting_is_an_option_showing_its_declared_default(
        command: str) -> None:
    options = _options(_parsers(build_parser())[command])
    settings = list(declared(COMMANDS[command]))
    assert len(settings) >= 20
    for d in settings:
        if d.flag is None:
            assert f"--{d.name.replace('_', '-')}" not in options
            continue
        action = options[d.flag]
        assert action.dest == d.name and action.default is None  # unset: no override
        assert action.help == help_of(d)
        if d.kind is not bool and d.shown:
            assert action.help.endswith(f"(default: {d.shown})")


def test_declared_defaults_are_the_defaults_of_the_configs() -> None:
    config = SimulateConfig()
    assert all(getattr(config, d.name) == d.default for d in declared(SimulateConfig))
    assert ServerConfig(insecure=True).round_timeout_s == 300
    assert config.round_timeout_s == 120  # the same key, declared per command
    shown = {d.name: d.shown for d in declared(ServerConfig)}
    assert shown["rounds"] == "10" and shown["max_update_norm"] == "1e6"
    assert shown["epochs"] == "0 = the task's" and shown["tls_cert"] == ""


def test_options_override_the_file_and_strategy_options_reach_both_commands(
        tmp_path: Path) -> None:
    from fedge.cli.options import given

    path = tmp_path / "sim.toml"
    path.write_text('strategy = "fedprox"\nmu = 0.5\nrounds = 3\n')
    args = build_parser().parse_args(["simulate", "--config", str(path), "--mu", "0.2",
                                      "--no-edge", "--scenario", "dropout"])
    options = given(args, SimulateConfig, skip=("scenario",))
    assert options == {"mu": 0.2, "edge": False}
    args = build_parser().parse_args(["server", "--strategy", "krum", "--byzantine-f", "2",
                                      "--round-timeout", "5", "--insecure"])
    assert given(args, ServerConfig) == {"strategy": "krum", "byzantine_f": 2,
                                         "round_timeout_s": 5.0, "insecure": True}
    args = build_parser().parse_args(["client", "--data", "a", "--data", "b"])
    assert given(args, ClientConfig) == {"data": ["a", "b"]}


@pytest.mark.parametrize(("argv", "message"), [
    (["server", "--insecure", "--rounds", "0"], "options: rounds must be >= 1, got 0"),
    (["server", "--insecure", "--port", "70000"], "port must be in [0, 65535]"),
    (["server", "--insecure", "--norm-action", "scale"], "norm_action must be one of"),
    (["server", "--insecure", "--strategy", "fedsgd"], "strategy must be one of"),
    (["server", "--rounds", "3"], "needs TLS"),
    (["server", "--config", "{tmp}", "--insecure"], "cannot read config file"),
    (["server", "--config", "{tmp}/missing.toml"], "does not exist"),
    (["client", "--insecure", "--poll-seconds", "0"], "poll_seconds must be >= 0.01"),
    (["client", "--insecure"], "the client needs local data"),
    (["simulate", "--clients", "0"], "clients must be >= 1"),
    (["simulate", "--dropout", "2"], "dropout must be in [0, 1]"),
    (["simulate", "--scenario", "nope"], "unknown scenario 'nope'"),
    (["simulate", "--mu", "0.1"], "mu applies to strategy fedprox"),
    (["data", "partition", "--clients", "0", "--out", "{tmp}/p"], "--clients must be >= 1"),
    (["status"], "give --server HOST:PORT"),
    (["status", "--server", "localhost:1", "--token", "t"], "needs TLS (--tls-ca)"),
    (["status", "--state-dir", "{tmp}"], "status.json does not exist"),
])
def test_every_mistake_ends_in_one_line_and_exit_2(
        argv: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("fedge: error: ") and message in lines[-1], err
    assert "Traceback" not in err


def test_python_dash_m_runs_the_command() -> None:
    run = subprocess.run([sys.executable, "-m", "fedge.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"fedge {__version__}"
    run = subprocess.run([sys.executable, "-m", "fedge.cli", "server", "--rounds", "x"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "invalid int value: 'x'" in run.stderr.splitlines()[-1]


def test_status_of_a_finished_run_shows_its_last_round_not_the_one_after() -> None:
    from fedge.cli.status import format_status

    snap = {"task": "digits-mlp", "phase": "done", "round": 13, "rounds_total": 12,
            "model_version": 12, "selected": 0, "reported": 0, "uptime_seconds": 40.0,
            "devices": [], "rounds": [], "refusals": {}}
    first = format_status(snap).splitlines()[0]
    assert "phase done  round 12/12  model v12" in first
    assert "round 5/12" in format_status({**snap, "phase": "training", "round": 5})
