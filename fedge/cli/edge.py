"""``fedge edge``: build an edge artifact from a stored checkpoint, verify one, and run
one on inputs (verify and predict need only numpy and onnxruntime); status, rollout and
rollback of the gated rollout are in edge_fleet.py."""

from __future__ import annotations

import argparse
from typing import Any

from fedge.errors import FedgeError


def register(sub: Any) -> None:
    """Adds ``fedge edge`` to the command's subparsers."""
    p = sub.add_parser("edge", help="build, verify and run edge artifacts",
                       description="Edge artifacts: a distilled int8 ONNX student model "
                       "with a signed manifest. verify and predict need only numpy and "
                       "onnxruntime.")
    edge_sub = p.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")
    build_p = edge_sub.add_parser("build", help="build an artifact from a stored checkpoint "
                                  "or from saved parameters (a Flower run's)")
    build_p.add_argument("--state-dir", dest="state_dir", required=True,
                         help="the server's state dir (checkpoints and signing key); with "
                         "--from-params, where the signing key is kept (made if missing)")
    build_p.add_argument("--from-params", dest="from_params",
                         help="build from this .npz or .safetensors of final parameters "
                         "(a Flower run's list, in the task model's state_dict order, or "
                         "named as the task's tensors); needs --task")
    build_p.add_argument("--round", type=int, help="the round to build from (default last)")
    build_p.add_argument("--task", help="the task (default: the one the state dir records)")
    build_p.add_argument("--out", required=True, help="the artifact directory to write")
    build_p.add_argument("--device-class", dest="device_class", default="",
                         help="the device class whose student to build, for a task with "
                         "several (default: its first)")
    build_p.set_defaults(func=build)
    verify_p = edge_sub.add_parser("verify", help="check an artifact's signature and hash")
    verify_p.add_argument("artifact", help="artifact directory or packed file")
    verify_p.add_argument("--public-key", dest="public_key", required=True,
                          help="the server's public key (PEM)")
    verify_p.set_defaults(func=verify)
    predict_p = edge_sub.add_parser("predict", help="print one prediction per input row")
    predict_p.add_argument("artifact", help="artifact directory or packed file")
    predict_p.add_argument("input", nargs="+", help="a .npy array of inputs, one example "
                           "per row; with --raw, of raw inputs, or image files")
    predict_p.add_argument("--raw", action="store_true",
                           help="the inputs are raw (images in their raw pixel range, as "
                           "the manifest's input.preprocessing.raw says): prepare them "
                           "with its steps first; image files imply it")
    predict_p.add_argument("--public-key", dest="public_key",
                           help="verify the artifact against this key first")
    predict_p.add_argument("--local", action="store_true",
                           help="the artifact is this device's own personalized model "
                           "(device-local, unsigned): open it only if its manifest says so")
    predict_p.add_argument("--scores", help="also save the model's output scores, one row "
                           "per input, to this .npy file")
    predict_p.set_defaults(func=predict)
    from fedge.cli.edge_fleet import register as register_fleet

    register_fleet(edge_sub)  # status, rollout, rollback: the gated rollout


def build(args: argparse.Namespace) -> int:
    """Builds and signs the artifact of a committed round of a state dir."""
    from pathlib import Path

    from fedge.edge.compiler.artifact import build_artifact
    from fedge.edge.compiler.keys import SigningKey
    from fedge.server.store import StateStore
    from fedge.tasks import load_task
    from fedge.tensors import from_blob

    if args.from_params:
        return _build_from_params(args)
    if not (Path(args.state_dir) / "fedge.db").is_file():
        raise FedgeError(f"{args.state_dir} is not a server state dir (no fedge.db)")
    store = StateStore(args.state_dir)
    try:
        recorded = store.recorded_task()
        records = store.rounds()
        if not records:
            raise FedgeError(f"{args.state_dir} holds no committed round")
        round_ = records[-1].round if args.round is None else args.round
        if round_ not in {r.round for r in records}:
            raise FedgeError(f"{args.state_dir} has no committed round {round_} "
                             f"(rounds 0..{records[-1].round})")
        weights, _ = from_blob(store.blob(round_))
    finally:
        store.close()
    task = load_task(args.task or recorded or "digits-mlp")
    key = SigningKey.load_or_create(args.state_dir)
    report = build_artifact(task, weights, round_, key, args.out,
                            student_class=_student_class(task, args.device_class))
    print(_built(args, f"round {round_}", report, key.key_id))
    return 0


def _student_class(task: Any, name: str) -> Any:
    """The task's student for device class name (None: the task's first)."""
    from fedge.tasks.students import pick_class

    return pick_class(task.student_classes(), 0, "", name) if name else None


def _build_from_params(args: argparse.Namespace) -> int:
    """Builds and signs the artifact of saved parameters (fedge/flower/params.py)."""
    from pathlib import Path

    from fedge.edge.compiler.artifact import build_artifact
    from fedge.edge.compiler.keys import SigningKey
    from fedge.flower.params import name_params, read_params
    from fedge.tasks import load_task
    from fedge.tasks.training import weights_of
    from fedge.tensors import spec_of

    if not args.task:
        raise FedgeError("--from-params needs --task: the model the parameters belong to")
    task = load_task(args.task)
    specs = [spec_of(n, a) for n, a in weights_of(task.build_model()).items()]
    weights = name_params(read_params(Path(args.from_params)), specs)
    round_ = args.round or 0
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    key = SigningKey.load_or_create(args.state_dir)
    report = build_artifact(task, weights, round_, key, args.out,
                            student_class=_student_class(task, args.device_class))
    print(_built(args, args.from_params, report, key.key_id))
    return 0


def _built(args: argparse.Namespace, source: str, report: Any, key_id: str) -> str:
    """The line `fedge edge build` prints about the artifact it made."""
    from fedge.edge.compiler.keys import PUBLIC_FILE

    return (f"{args.out}: {source}, int8 {report.int8_onnx_bytes:,} bytes (teacher fp32 "
            f"{report.fp32_onnx_bytes:,}), accuracy int8 {report.int8_accuracy:.4f} teacher "
            f"{report.teacher_accuracy:.4f}; signed by key {key_id} "
            f"({args.state_dir}/{PUBLIC_FILE})")


def verify(args: argparse.Namespace) -> int:
    """Checks an artifact's signature and hash, and says what it holds."""
    from fedge.edge.runtime import load_public_key, read_artifact, verify

    manifest = verify(read_artifact(args.artifact), load_public_key(args.public_key))
    raw = manifest.raw
    print(f"{args.artifact}: OK, task {raw.get('task')} round {manifest.round}, model "
          f"sha256 {manifest.sha256}, signed by key {raw['signature']['key_id']}, needs "
          f"onnxruntime >= {raw.get('min_runtime', {}).get('onnxruntime', '?')}")
    return 0


def predict(args: argparse.Namespace) -> int:
    """Prints one predicted label per input row."""
    import numpy as np

    from fedge.edge.runtime import EdgeModel, load_public_key
    from fedge.edge.runtime.inputs import load_images, prepare

    if args.local and args.public_key:
        raise FedgeError("--local opens a device's own unsigned artifact; a server's is "
                         "checked with --public-key: give one of them")
    key = load_public_key(args.public_key) if args.public_key else None
    model = EdgeModel.open(args.artifact, key, local=args.local)
    preprocessing = model.manifest.raw["input"].get("preprocessing")
    npy = len(args.input) == 1 and args.input[0].endswith(".npy")
    raw = args.raw or not npy
    if raw and not isinstance(preprocessing, dict):
        raise FedgeError("this artifact's manifest does not describe raw inputs (built by "
                         "an older fedge); give prepared inputs as a .npy")
    if npy:
        try:
            x = np.load(args.input[0], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FedgeError(f"cannot read {args.input[0]} as a .npy array: {exc}") from exc
    else:
        x = load_images(args.input, preprocessing["raw"])
    if raw:
        x = prepare(x, preprocessing)
    labels = model.manifest.labels
    if args.scores:  # the raw outputs too, bit for bit, to compare runtimes with
        scores = model.logits(x)
        np.save(args.scores, scores, allow_pickle=False)
        indices = scores.argmax(axis=1)
    else:
        indices = model.predict(x)
    for index in indices:
        print(labels[int(index)])
    return 0
