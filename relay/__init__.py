"""Relays (``fedge relay``): an aggregator between devices and a server, a server toward
its devices and one device toward its upstream, sending the example-weighted mean of its
devices' updates with their summed example count. It composes the server and the client
rooms, so it sits above both (docs/relays.md)."""
