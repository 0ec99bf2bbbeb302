"""Cross-cutting runtime services: metrics (prometheus-client lives only here), logging, lifecycle."""
