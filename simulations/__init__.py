"""Many clients on one machine: partitioners, the runner (a real server and N real
client daemons over loopback gRPC), and reports."""
