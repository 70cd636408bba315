"""The client daemon: join, long-poll, fetch, train locally with torch, submit; with
reconnect and backoff while the server is away, and a clean stop on SIGTERM/SIGINT.

``daemon.py`` is the task loop and its handlers (public extension points: a channel
factory and a handler per task kind); ``channel.py`` the gRPC channel, TLS, the token
and what a refusal means; ``session.py`` a joined session, stop and backoff;
``transfers.py`` downloads and uploads; ``deploy.py`` the hand-off of edge artifacts;
``trainer.py``, ``update.py`` and ``data/`` local training and data."""

import fedge  # noqa: F401  (first: it sets OpenMP's wait policy before anything loads torch)
