"""Orchestration: read what is, compare with what the builders in ``desired`` say should be, change the
difference through the ports, and report the result as conditions and events. No kopf here."""
