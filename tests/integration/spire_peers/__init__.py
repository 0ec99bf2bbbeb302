"""Small programs the SPIRE integration tests spawn as separate processes, each with its own SVID."""
