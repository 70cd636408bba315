"""LoRA adapters on a frozen base model, with ``peft``, shaped so that fedge federates the
adapters alone.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a
pretrained weight W and learns a low-rank change B A (rank r, B starting at zero), so a
d x d layer trains 2 d r numbers instead of d^2. Federated, each device trains its
adapters and the server averages them tensor by tensor, A with A and B with B (FedIT:
Zhang et al., 2024, "Towards Building the Federated GPT: Federated Instruction Tuning").
The mean of the products B_k A_k is not the product of the means; FedIT accepts that
small error for an upload of the adapters only, and so do we.

What fedge fetches, trains, uploads and aggregates is a model's ``state_dict``. After
:func:`with_lora` the frozen tensors are no longer parameters but *non-persistent
buffers*: they still move with ``.to(device)`` and still compute, but they are not in the
state, so the global model, every update and the server's average hold the adapters (and
the head, which a classifier trains whole) and nothing else, with no change to the server
or the daemon. The frozen base is therefore not sent either: every process builds the same
one (a checkpoint file it reads, or, in the built-in task, a fixed seed), as it would load
a pretrained model in any LoRA recipe.

``peft`` is an optional extra (``pip install peft``); it is imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedge.errors import TaskError

if TYPE_CHECKING:
    from torch import nn


def with_lora(base: nn.Module, targets: Sequence[str], rank: int = 4, alpha: int = 8,
              train_whole: Sequence[str] = ()) -> nn.Module:
    """base with LoRA adapters on the linear layers named targets (peft's
    ``target_modules``), the modules named train_whole trained in full (a classifier's
    head), and every other tensor frozen out of the model's state (see the module's
    docstring).

    Raises TaskError when peft is not installed.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise TaskError("LoRA tasks need the peft package: pip install 'fedge[lora]' "
                        f"({exc})") from exc
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                        lora_dropout=0.0, modules_to_save=list(train_whole) or None)
    model = get_peft_model(base, config)
    freeze_out_of_state(model)
    return model


def freeze_out_of_state(model: nn.Module) -> None:
    """Turns every parameter that does not require a gradient into a non-persistent
    buffer of its module: it keeps computing and moving with the model, but it leaves the
    state_dict (and so every fetch, update and aggregate) and the optimizer's parameters."""
    for module in model.modules():
        frozen = [name for name, p in module.named_parameters(recurse=False)
                  if not p.requires_grad]
        for name in frozen:
            tensor = module._parameters.pop(name)
            assert tensor is not None
            module.register_buffer(name, tensor.detach(), persistent=False)


def parameter_count(model: nn.Module) -> tuple[int, int]:
    """(values in the model's state, values of the whole model, frozen buffers included):
    what an adapter update carries against what a full-model update would."""
    state = sum(t.numel() for t in model.state_dict().values())
    whole = (sum(p.numel() for p in model.parameters())
             + sum(b.numel() for b in model.buffers()))
    return state, whole
