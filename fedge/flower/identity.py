"""The task identity newer Flower stamps on the messages a process builds.

By 1.38 (1.36 had none), a Flower ``Message`` made without ``reply_to`` (an
instruction: the server's "train" to a node) takes its run, sender node and task from the
process-wide ``flwr.supercore.task_identity.TaskIdentity``, which Flower's own runtimes
set before they run an app (``flwr.server.compat.app`` sets task 1, the run and the
SuperLink's node for its legacy server). fedge builds such messages outside those
runtimes: the ClientApp adapter (:mod:`fedge.flower.client`) hands a node the server's
"train", and the SecAgg+ oracle (``bench/flower_secagg.py``) drives the server workflow
in-process. Older releases (1.30) have no such identity and stamp zeros until the Grid
pushes the message, so there this does nothing.
"""

from __future__ import annotations

SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID, the server's node id


def act_as_server(run_id: int) -> None:
    """Makes this process the SuperLink's task 1 of run_id, as Flower's legacy server
    does, so that the instructions built here are the server's.

    The adapter's devices all set run 0 and the SuperLink, so the threads of ``fedge
    simulate`` that share a process agree on what it says.
    """
    try:
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:  # Flower before 1.38: messages carry no task identity
        return
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
