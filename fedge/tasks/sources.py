"""Where a built-in task's public data set lives, and the split shared by those tasks.

A task that reads a public data set looks for it in the directory its environment
variable names (``FEDGE_CIFAR10_DIR``, ...): the variable reaches every process of a run
(server, simulation hosts, ``fedge data``) without a setting on each command. Unset, the
task uses its deterministic synthetic set of the same shapes; set to anything but a
directory, it is a mistake. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fedge.errors import TaskError
from fedge.tasks import Splits

log = logging.getLogger(__name__)

PROXY_FRACTION = 0.1  # of the training set, held by the server for distillation
SPLIT_SEED = 0


def dataset_dir(variable: str, task: str) -> Path | None:
    """The directory the environment variable names, None when it is unset or empty.

    Raises TaskError when it names something that is not a directory.
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        log.debug("%s: %s is unset, using the synthetic set", task, variable)
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TaskError(f"{variable}={value}: no such directory (task {task} reads its data "
                        "set from there; unset it to use the synthetic set)")
    return path


def with_proxy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
               test_y: np.ndarray) -> Splits:
    """Splits with a fixed PROXY_FRACTION of the training set (chosen by SPLIT_SEED) held
    out as the proxy set no client holds."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train_y))
    n_proxy = round(PROXY_FRACTION * len(train_y))
    proxy, rest = np.sort(order[:n_proxy]), np.sort(order[n_proxy:])
    return Splits(train_x[rest], train_y[rest], test_x, test_y, train_x[proxy],
                  train_y[proxy])
