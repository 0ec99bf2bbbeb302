"""Operational commands for SREs: ``payplane ledger …`` (and, as they land, dead-letter tools)."""
