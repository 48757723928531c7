"""Identity graph stores behind one interface (embedded SQLite by default, Neo4j at scale)."""
