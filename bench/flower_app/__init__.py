"""A Flower App (ServerApp + ClientApp) that trains fedge's task model with fedge's own
trainer, so that ``bench.round_latency`` compares the two systems on the same work.

``bench.round_latency`` copies these modules into a temporary app directory next to a
generated ``pyproject.toml`` and submits it with ``flwr run``. They import only what the
installed ``fedge`` distribution provides (``fedge``, ``client``, ``simulations``), never
``bench``, since Flower loads them from its own copy of the app.
"""
