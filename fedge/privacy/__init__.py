"""Differential privacy, the math only: clipping, Gaussian noise, adaptive clipping and the
privacy accountant (dp-accounting). No gRPC and no I/O; the server's strategy wrapper
(fedge.server.strategies.dp), the device's local mechanism (fedge.client.update) and the
round driver's budget (fedge.server.budget) call these. See docs/privacy.md."""
