"""Partitioners: split a labelled pool among clients (pure functions over indices),
and write each client's share as a directory that ``fedge client --data`` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.errors import ConfigError


def iid(num_examples: int, clients: int, seed: int) -> list[np.ndarray]:
    """A random, near-equal split of range(num_examples)."""
    if clients > num_examples:
        raise ConfigError(f"cannot split {num_examples} examples among {clients} clients")
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, clients)]


def dirichlet(labels: np.ndarray, clients: int, alpha: float, seed: int,
              min_examples: int = 2) -> list[np.ndarray]:
    """Label-skewed split: each class's examples go to clients in Dirichlet(alpha)
    proportions (Hsu et al. 2019, https://arxiv.org/abs/1909.06335).

    Smaller alpha is more skewed. Draws are repeated (deterministically) until every
    client holds at least min_examples.
    """
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    if clients * min_examples > len(labels):
        raise ConfigError(f"cannot give {clients} clients {min_examples} examples each "
                          f"from {len(labels)}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shares[client].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shares]
        if min(len(p) for p in parts) >= min_examples:
            return parts
    raise ConfigError(f"Dirichlet(alpha={alpha}) left a client with fewer than "
                      f"{min_examples} examples in 1000 draws; raise alpha")


def quantity(num_examples: int, clients: int, alpha: float, seed: int,
             min_examples: int = 2) -> list[np.ndarray]:
    """Quantity-skewed split: labels stay IID, but client sizes follow Dirichlet(alpha)
    proportions (smaller alpha, more unequal), each client holding at least min_examples."""
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    if clients * min_examples > num_examples:
        raise ConfigError(f"cannot give {clients} clients {min_examples} examples each "
                          f"from {num_examples}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_examples)
    spare = num_examples - clients * min_examples
    sizes = min_examples + np.floor(rng.dirichlet(np.full(clients, alpha)) * spare).astype(int)
    sizes[np.argmax(sizes)] += num_examples - int(sizes.sum())  # the rounding remainder
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def shards(labels: np.ndarray, clients: int, seed: int, per_client: int = 2
           ) -> list[np.ndarray]:
    """Label-skewed split of McMahan et al. 2017 (https://arxiv.org/abs/1602.05629):
    sort by label, cut into clients * per_client shards, deal per_client to each, so a
    client sees about per_client classes."""
    count = clients * per_client
    if count > len(labels):
        raise ConfigError(f"cannot cut {len(labels)} examples into {count} shards")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, count)
    dealt = rng.permutation(count)
    return [np.sort(np.concatenate([pieces[i] for i in dealt[k::clients]]))
            for k in range(clients)]


def split(labels: np.ndarray, clients: int, partition: str, alpha: float,
          seed: int) -> list[np.ndarray]:
    """Dispatches to the named partitioner."""
    if partition == "iid":
        return iid(len(labels), clients, seed)
    if partition == "dirichlet":
        return dirichlet(labels, clients, alpha, seed)
    if partition == "quantity":
        return quantity(len(labels), clients, alpha, seed)
    if partition == "shards":
        return shards(labels, clients, seed)
    raise ConfigError(f"unknown partition {partition!r}; use iid, dirichlet, quantity "
                      "or shards")


def write_partitions(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray],
                     out: str | Path) -> list[Path]:
    """Writes OUT/client-K/data.npz for each part; returns the client directories."""
    dirs = []
    for k, index in enumerate(parts):
        directory = Path(out) / f"client-{k}"
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "data.npz", x=x[index], y=y[index])
        dirs.append(directory)
    return dirs
