"""The runtime: the Faust app and its agents, the resolution pipeline, topics, metrics and logging."""
