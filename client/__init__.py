"""The client daemon: join, long-poll, fetch, train locally with torch, submit; with
reconnect and backoff while the server is away, and a clean stop on SIGTERM/SIGINT."""

import fedge  # noqa: F401  (first: it sets OpenMP's wait policy before anything loads torch)
