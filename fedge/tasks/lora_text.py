"""Text classification by LoRA fine-tuning of a small transformer (``text-lora``).

The base model is a pre-LN transformer encoder defined here (nanoGPT's shape, without the
causal mask): token and position embeddings, BLOCKS blocks of attention (separate ``q``,
``k``, ``v``, ``out`` projections) and an MLP, a final norm, mean pooling and a linear
head. Nothing is downloaded: the base is built from a fixed seed, identically in the
server and every device, where a real deployment would read a pretrained checkpoint from
disk (see :func:`fedge.tasks.lora.with_lora` for a base of your own). Devices train rank-4
LoRA adapters on the attention's ``q`` and ``v`` and the head; the update and the
server's average carry those tensors only, about 1% of the model's values.

The data are synthetic token sequences with a learnable signal: each class owns a few
keyword tokens, and a sequence is SEQ_LEN random tokens of the rest of the vocabulary with
KEYWORDS positions replaced by keywords of its class. :func:`full_task` is the same model
with every weight trained, the full-model update LoRA is measured against
(``bench/lora.py``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fedge.tasks import DataSchema, Splits, Task, TrainDefaults
from fedge.tasks.sources import with_proxy

if TYPE_CHECKING:
    from torch import nn

LABELS = ("sports", "politics", "science", "arts")
VOCAB = 1000
SEQ_LEN = 32
DIM = 128
HEADS = 4
BLOCKS = 2
KEYWORDS = 3          # keyword positions per sequence
KEYWORDS_PER_CLASS = 8
BASE_SEED = 1234      # the "pretrained" base: the same in every process
RANK = 4


def synthetic(n_train: int = 2000, n_test: int = 400, seed: int = 0) -> Splits:
    """Deterministic token sequences (int64, (n, SEQ_LEN)) whose class is told by which
    class's keywords they hold (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    keywords = rng.permutation(VOCAB)[:len(LABELS) * KEYWORDS_PER_CLASS]
    keywords = keywords.reshape(len(LABELS), KEYWORDS_PER_CLASS)
    filler = np.setdiff1d(np.arange(VOCAB), keywords.ravel())
    n_proxy = round(n_train / 9)  # so that the proxy is 10% of train + proxy

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % len(LABELS)
        rng.shuffle(y)
        x = rng.choice(filler, (n, SEQ_LEN)).astype(np.int64)
        for i in range(n):
            where = rng.choice(SEQ_LEN, KEYWORDS, replace=False)
            x[i, where] = rng.choice(keywords[y[i]], KEYWORDS)
        return x, y

    train_x, train_y = draw(n_train + n_proxy)
    test_x, test_y = draw(n_test)
    return with_proxy(train_x, train_y, test_x, test_y)


@lru_cache(maxsize=1)
def load_data() -> Splits:
    """The synthetic token set (the task reads no public data set)."""
    return synthetic()


def encoder() -> nn.Module:
    """The base transformer encoder, its weights drawn from BASE_SEED (about 530k
    parameters at the module's sizes)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.out = (nn.Linear(DIM, DIM) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape

            def heads(z: torch.Tensor) -> torch.Tensor:
                return z.view(b, t, HEADS, DIM // HEADS).transpose(1, 2)

            y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)),
                                               heads(self.v(x)))
            return self.out(y.transpose(1, 2).reshape(b, t, DIM))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
            self.attn = Attention()
            self.fc1, self.fc2 = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, DIM)
            self.position = nn.Parameter(0.02 * torch.randn(SEQ_LEN, DIM))
            self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))
            self.norm = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, len(LABELS))

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.tokens(tokens) + self.position[: tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).mean(dim=1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BASE_SEED)
        return Encoder()


def lora_encoder() -> nn.Module:
    """The base encoder with rank-RANK adapters on every block's q and v, the head
    trained whole; only those tensors are the model's state. Its adapters start from
    BASE_SEED too, so the server's initial model is the same in every run."""
    import torch

    from fedge.tasks.lora import with_lora

    base = encoder()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BASE_SEED + 1)
        return with_lora(base, targets=("q", "v"), rank=RANK, alpha=2 * RANK,
                         train_whole=("head",))


SCHEMA = DataSchema(input_shape=(SEQ_LEN,), labels=LABELS, input_dtype="int64",
                    raw_kind="tensor")


def lora_task() -> Task:
    """LoRA fine-tuning of the small transformer on the synthetic token set."""
    return Task(
        name="text-lora",
        schema=SCHEMA,
        build_model=lora_encoder,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.1, batch_size=32, momentum=0.9),
        description="token sequences in 4 classes, LoRA adapters of a small transformer "
                    "(needs peft)",
    )


def full_task() -> Task:
    """The same model and data with every weight trained: the full-model update that
    text-lora's upload is measured against."""
    return Task(
        name="text-full",
        schema=SCHEMA,
        build_model=encoder,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.05, batch_size=32, momentum=0.9),
        description="token sequences in 4 classes, the whole small transformer trained",
    )
