"""Fixtures that run the AIQ sandbox as a real server on loopback (filled in by the sandbox work)."""
