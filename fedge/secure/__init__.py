"""Secure aggregation (SecAgg+, Bell et al., CCS 2020): the server learns the sum of the
round's updates and nothing about any one of them.

Pure pieces, no gRPC and no threads: Shamir sharing (``shamir``), the key agreement and
authenticated encryption of shares (``keys``), the mask generator (``prg``), fixed-point
quantization into Z_{2^32} (``quantize``), the neighbour graph (``graph``), and the
protocol's two sides as small state machines (``device``, ``unmask``). The server's and
the daemon's gRPC code drive these; the tests drive them directly.
"""
