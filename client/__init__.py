"""The client daemon: join, long-poll, fetch, train locally with torch, submit; with
reconnect and backoff while the server is away, and a clean stop on SIGTERM/SIGINT."""
