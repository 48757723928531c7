"""Reference business flows built on the scenario runtime; each runs with ``idgraph demo --flow NAME``."""
