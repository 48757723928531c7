"""The runtime: broker, Faust app and agents, and the ``idgraph`` command line."""
