"""The `idgraph` command line: the composition root, free to import every layer including the dev stack."""
