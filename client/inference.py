"""What the daemon's inference-only mode needs to know about the device it runs on.

An inference-only device (``fedge client --inference-only``, what ``pip install
'fedge[edge]'`` supports) joins the server as a device that cannot train: it installs
the edge artifacts it is shipped and reports how they do on its own labelled data, and
it never imports torch. This module holds the checks made before choosing the mode, and
nothing that needs torch.
"""

from __future__ import annotations

import importlib

from fedge import __version__


def torch_problem() -> str | None:
    """Why this device cannot train (None: torch imports and it can).

    Importing torch is the only honest test: an installed but broken torch (a missing
    shared library, a CUDA mismatch) fails with OSError, not ImportError.
    """
    try:
        importlib.import_module("torch")
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            return f"torch is installed but cannot be imported: {exc}"
        return "torch is not installed"
    except (ImportError, OSError) as exc:
        return f"torch is installed but cannot be imported: {exc}"
    return None


def runtime_description() -> str:
    """The software an inference-only device runs, for the server's device list."""
    import onnxruntime

    return f"fedge {__version__} onnxruntime {onnxruntime.__version__}"
