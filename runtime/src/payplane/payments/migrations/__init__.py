"""Forward-only SQL migrations of a rail's payments database (applied by the payment worker on start)."""
