"""Paper-style tables and figures from the store."""
