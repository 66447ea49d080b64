"""Console recordings: the file format (sans-IO), the per-console recorder (a writer thread
fed through a bounded queue) and the store (listing, integrity, retention)."""
