from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TRAIN: _ClassVar[TaskKind]
    WAIT: _ClassVar[TaskKind]
    STOP: _ClassVar[TaskKind]
    DEPLOY: _ClassVar[TaskKind]
    EVALUATE: _ClassVar[TaskKind]
    ROLLBACK: _ClassVar[TaskKind]
    PERSONALIZE: _ClassVar[TaskKind]

class UpdateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPDATE_KIND_UNSPECIFIED: _ClassVar[UpdateKind]
    WEIGHTS: _ClassVar[UpdateKind]
    DELTA: _ClassVar[UpdateKind]
    GRADIENT: _ClassVar[UpdateKind]

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    F32: _ClassVar[Encoding]
    F16: _ClassVar[Encoding]
    INT8: _ClassVar[Encoding]
    TOPK: _ClassVar[Encoding]

class SecureStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECURE_STAGE_UNSPECIFIED: _ClassVar[SecureStage]
    SECURE_SHARE: _ClassVar[SecureStage]
    SECURE_UNMASK: _ClassVar[SecureStage]
    SECURE_REVEAL: _ClassVar[SecureStage]
TASK_KIND_UNSPECIFIED: TaskKind
TRAIN: TaskKind
WAIT: TaskKind
STOP: TaskKind
DEPLOY: TaskKind
EVALUATE: TaskKind
ROLLBACK: TaskKind
PERSONALIZE: TaskKind
UPDATE_KIND_UNSPECIFIED: UpdateKind
WEIGHTS: UpdateKind
DELTA: UpdateKind
GRADIENT: UpdateKind
ENCODING_UNSPECIFIED: Encoding
F32: Encoding
F16: Encoding
INT8: Encoding
TOPK: Encoding
SECURE_STAGE_UNSPECIFIED: SecureStage
SECURE_SHARE: SecureStage
SECURE_UNMASK: SecureStage
SECURE_REVEAL: SecureStage

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("accelerator", "memory_bytes", "platform", "runtime")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    accelerator: str
    memory_bytes: int
    platform: str
    runtime: str
    def __init__(self, accelerator: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., platform: _Optional[str] = ..., runtime: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("device_id", "task", "fingerprint", "capabilities", "num_examples", "previous_session", "inference_only", "relay", "device_class", "personalize")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SESSION_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    task: str
    fingerprint: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    capabilities: Capabilities
    num_examples: int
    previous_session: str
    inference_only: bool
    relay: bool
    device_class: str
    personalize: bool
    def __init__(self, device_id: _Optional[str] = ..., task: _Optional[str] = ..., fingerprint: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., num_examples: _Optional[int] = ..., previous_session: _Optional[str] = ..., inference_only: bool = ..., relay: bool = ..., device_class: _Optional[str] = ..., personalize: bool = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("session_id", "round", "model_version", "poll_seconds", "holdout_fraction", "update_crc_optional", "secure_rounds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CRC_OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    SECURE_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round: int
    model_version: int
    poll_seconds: float
    holdout_fraction: float
    update_crc_optional: bool
    secure_rounds: bool
    def __init__(self, session_id: _Optional[str] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., poll_seconds: _Optional[float] = ..., holdout_fraction: _Optional[float] = ..., update_crc_optional: bool = ..., secure_rounds: bool = ...) -> None: ...

class PollRequest(_message.Message):
    __slots__ = ("session_id", "wait_seconds", "advert")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADVERT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    wait_seconds: float
    advert: SecureAdvert
    def __init__(self, session_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ..., advert: _Optional[_Union[SecureAdvert, _Mapping]] = ...) -> None: ...

class TrainConfig(_message.Message):
    __slots__ = ("epochs", "lr", "batch_size", "proximal_mu", "update_kind", "encoding", "seed", "topk_fraction", "momentum", "dp_clip", "dp_noise_multiplier", "secure")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    UPDATE_KIND_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOPK_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    DP_CLIP_FIELD_NUMBER: _ClassVar[int]
    DP_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    lr: float
    batch_size: int
    proximal_mu: float
    update_kind: UpdateKind
    encoding: Encoding
    seed: int
    topk_fraction: float
    momentum: float
    dp_clip: float
    dp_noise_multiplier: float
    secure: SecureParams
    def __init__(self, epochs: _Optional[int] = ..., lr: _Optional[float] = ..., batch_size: _Optional[int] = ..., proximal_mu: _Optional[float] = ..., update_kind: _Optional[_Union[UpdateKind, str]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., seed: _Optional[int] = ..., topk_fraction: _Optional[float] = ..., momentum: _Optional[float] = ..., dp_clip: _Optional[float] = ..., dp_noise_multiplier: _Optional[float] = ..., secure: _Optional[_Union[SecureParams, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "task_id", "round", "model_version", "train", "deadline_unix", "retry_after_seconds", "message", "artifact_sha256", "evaluate_global", "canary", "canary_margin")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    task_id: str
    round: int
    model_version: int
    train: TrainConfig
    deadline_unix: float
    retry_after_seconds: float
    message: str
    artifact_sha256: str
    evaluate_global: bool
    canary: bool
    canary_margin: float
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., train: _Optional[_Union[TrainConfig, _Mapping]] = ..., deadline_unix: _Optional[float] = ..., retry_after_seconds: _Optional[float] = ..., message: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., evaluate_global: bool = ..., canary: bool = ..., canary_margin: _Optional[float] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("session_id", "model_version", "offset", "artifact")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_version: int
    offset: int
    artifact: bool
    def __init__(self, session_id: _Optional[str] = ..., model_version: _Optional[int] = ..., offset: _Optional[int] = ..., artifact: bool = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("model_version", "offset", "data", "total_size", "sha256")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, model_version: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("session_id", "task_id", "round", "kind", "encoding", "num_examples", "metrics", "num_tensors", "sha256", "resume_offset")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_TENSORS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RESUME_OFFSET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    round: int
    kind: UpdateKind
    encoding: Encoding
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    num_tensors: int
    sha256: str
    resume_offset: int
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., kind: _Optional[_Union[UpdateKind, str]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., num_tensors: _Optional[int] = ..., sha256: _Optional[str] = ..., resume_offset: _Optional[int] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "data", "crc32")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    crc32: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "tensor")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    tensor: TensorChunk
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., tensor: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "message", "unmask")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    unmask: SecureReply
    def __init__(self, accepted: bool = ..., message: _Optional[str] = ..., unmask: _Optional[_Union[SecureReply, _Mapping]] = ...) -> None: ...

class MetricsReport(_message.Message):
    __slots__ = ("session_id", "round", "model_version", "metrics", "task_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round: int
    model_version: int
    metrics: _containers.ScalarMap[str, float]
    task_id: str
    def __init__(self, session_id: _Optional[str] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., task_id: _Optional[str] = ...) -> None: ...

class MetricsReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("last_rounds",)
    LAST_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    last_rounds: int
    def __init__(self, last_rounds: _Optional[int] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "last_seen_seconds", "platform", "accelerator", "runtime", "num_examples", "authenticated", "live", "edge_model", "inference_only", "device_class")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    EDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    last_seen_seconds: float
    platform: str
    accelerator: str
    runtime: str
    num_examples: int
    authenticated: bool
    live: bool
    edge_model: str
    inference_only: bool
    device_class: str
    def __init__(self, device_id: _Optional[str] = ..., last_seen_seconds: _Optional[float] = ..., platform: _Optional[str] = ..., accelerator: _Optional[str] = ..., runtime: _Optional[str] = ..., num_examples: _Optional[int] = ..., authenticated: bool = ..., live: bool = ..., edge_model: _Optional[str] = ..., inference_only: bool = ..., device_class: _Optional[str] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round", "accuracy", "loss", "clients", "examples", "bytes_up", "bytes_down", "seconds", "committed_at", "epsilon", "fed_accuracy", "fed_loss", "fed_examples", "fed_edge_accuracy", "fed_edge_loss", "fed_edge_examples")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    FED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FED_LOSS_FIELD_NUMBER: _ClassVar[int]
    FED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    FED_EDGE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FED_EDGE_LOSS_FIELD_NUMBER: _ClassVar[int]
    FED_EDGE_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    round: int
    accuracy: float
    loss: float
    clients: int
    examples: int
    bytes_up: int
    bytes_down: int
    seconds: float
    committed_at: float
    epsilon: float
    fed_accuracy: float
    fed_loss: float
    fed_examples: int
    fed_edge_accuracy: float
    fed_edge_loss: float
    fed_edge_examples: int
    def __init__(self, round: _Optional[int] = ..., accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., clients: _Optional[int] = ..., examples: _Optional[int] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., seconds: _Optional[float] = ..., committed_at: _Optional[float] = ..., epsilon: _Optional[float] = ..., fed_accuracy: _Optional[float] = ..., fed_loss: _Optional[float] = ..., fed_examples: _Optional[int] = ..., fed_edge_accuracy: _Optional[float] = ..., fed_edge_loss: _Optional[float] = ..., fed_edge_examples: _Optional[int] = ...) -> None: ...

class PrivacyStatus(_message.Message):
    __slots__ = ("mode", "noise_multiplier", "delta", "epsilon", "target_epsilon", "clip")
    MODE_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    mode: str
    noise_multiplier: float
    delta: float
    epsilon: float
    target_epsilon: float
    clip: float
    def __init__(self, mode: _Optional[str] = ..., noise_multiplier: _Optional[float] = ..., delta: _Optional[float] = ..., epsilon: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., clip: _Optional[float] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("task", "phase", "round", "rounds_total", "model_version", "devices", "rounds", "refusals", "uptime_seconds", "selected", "reported", "devices_total", "devices_live", "privacy", "rollout")
    class RefusalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    DEVICES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEVICES_LIVE_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    task: str
    phase: str
    round: int
    rounds_total: int
    model_version: int
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    refusals: _containers.ScalarMap[str, int]
    uptime_seconds: float
    selected: int
    reported: int
    devices_total: int
    devices_live: int
    privacy: PrivacyStatus
    rollout: RolloutStatus
    def __init__(self, task: _Optional[str] = ..., phase: _Optional[str] = ..., round: _Optional[int] = ..., rounds_total: _Optional[int] = ..., model_version: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., refusals: _Optional[_Mapping[str, int]] = ..., uptime_seconds: _Optional[float] = ..., selected: _Optional[int] = ..., reported: _Optional[int] = ..., devices_total: _Optional[int] = ..., devices_live: _Optional[int] = ..., privacy: _Optional[_Union[PrivacyStatus, _Mapping]] = ..., rollout: _Optional[_Union[RolloutStatus, _Mapping]] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("round", "stage", "reason", "canaries", "rolled_back")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    round: int
    stage: str
    reason: str
    canaries: _containers.RepeatedScalarFieldContainer[str]
    rolled_back: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., stage: _Optional[str] = ..., reason: _Optional[str] = ..., canaries: _Optional[_Iterable[str]] = ..., rolled_back: _Optional[_Iterable[str]] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("action", "reason")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: str
    reason: str
    def __init__(self, action: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RolloutReply(_message.Message):
    __slots__ = ("rollout", "message")
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    rollout: RolloutStatus
    message: str
    def __init__(self, rollout: _Optional[_Union[RolloutStatus, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class SecureParams(_message.Message):
    __slots__ = ("threshold", "degree", "seed", "size", "clip", "weight_cap", "scale", "noise_std", "roster", "devices", "mask_prg")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MASK_PRG_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    degree: int
    seed: bytes
    size: int
    clip: float
    weight_cap: int
    scale: float
    noise_std: float
    roster: _containers.RepeatedCompositeFieldContainer[SecureAdvert]
    devices: _containers.RepeatedScalarFieldContainer[str]
    mask_prg: str
    def __init__(self, threshold: _Optional[int] = ..., degree: _Optional[int] = ..., seed: _Optional[bytes] = ..., size: _Optional[int] = ..., clip: _Optional[float] = ..., weight_cap: _Optional[int] = ..., scale: _Optional[float] = ..., noise_std: _Optional[float] = ..., roster: _Optional[_Iterable[_Union[SecureAdvert, _Mapping]]] = ..., devices: _Optional[_Iterable[str]] = ..., mask_prg: _Optional[str] = ...) -> None: ...

class SecureAdvert(_message.Message):
    __slots__ = ("device_id", "encrypt_public", "mask_public", "mask_prg")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PRG_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    encrypt_public: bytes
    mask_public: bytes
    mask_prg: str
    def __init__(self, device_id: _Optional[str] = ..., encrypt_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ..., mask_prg: _Optional[str] = ...) -> None: ...

class PeerBytes(_message.Message):
    __slots__ = ("peer", "data")
    PEER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    peer: str
    data: bytes
    def __init__(self, peer: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class SecureRequest(_message.Message):
    __slots__ = ("session_id", "task_id", "round", "stage", "shares", "seed_shares", "key_shares", "wait_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    round: int
    stage: SecureStage
    shares: _containers.RepeatedCompositeFieldContainer[PeerBytes]
    seed_shares: _containers.RepeatedCompositeFieldContainer[PeerBytes]
    key_shares: _containers.RepeatedCompositeFieldContainer[PeerBytes]
    wait_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., stage: _Optional[_Union[SecureStage, str]] = ..., shares: _Optional[_Iterable[_Union[PeerBytes, _Mapping]]] = ..., seed_shares: _Optional[_Iterable[_Union[PeerBytes, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[PeerBytes, _Mapping]]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class SecureReply(_message.Message):
    __slots__ = ("ready", "shares", "survivors", "dropped", "message")
    READY_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    shares: _containers.RepeatedCompositeFieldContainer[PeerBytes]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    message: str
    def __init__(self, ready: bool = ..., shares: _Optional[_Iterable[_Union[PeerBytes, _Mapping]]] = ..., survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ...) -> None: ...

class MaskedHeader(_message.Message):
    __slots__ = ("session_id", "task_id", "round", "num_examples", "size", "sha256", "metrics", "unmask_wait_seconds")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    UNMASK_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    round: int
    num_examples: int
    size: int
    sha256: str
    metrics: _containers.ScalarMap[str, float]
    unmask_wait_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., unmask_wait_seconds: _Optional[float] = ...) -> None: ...

class MaskedChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: MaskedHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[MaskedHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadOffsetRequest(_message.Message):
    __slots__ = ("session_id", "task_id", "sha256")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    sha256: str
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadOffsetReply(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...
