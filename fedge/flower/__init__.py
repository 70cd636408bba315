"""Flower interoperability: Flower clients under the fedge daemon (``client.py``), fedge's
strategies as Flower strategies (``strategy.py``), and Flower parameters to named
tensors (``params.py``).

It sits above the rooms, like the CLI: the client adapter uses the daemon's trainer seam,
the strategies use the server's. Nothing here is imported unless Flower is used, and
only here is ``flwr`` imported (``pip install 'fedge[flower]'``).
"""
