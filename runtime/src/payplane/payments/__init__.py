"""Payments: the client-facing object and its state machine (pure; the payment worker drives it)."""
