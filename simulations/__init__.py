"""Many clients on one machine: partitioners, the runner (a real server and N real
client daemons over loopback gRPC), and reports."""

import fedge  # noqa: F401  (first: it sets OpenMP's wait policy before anything loads torch)
