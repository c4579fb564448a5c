"""A local stand-in for the AIQ API, so nobody develops or tests against a live marketing account.

Run it with ``aiq-sandbox`` (or ``python -m aiq_sandbox``); ``aiq-sandbox --help`` lists the switches.
Modules: ``validation`` (the payload rules, written from the spec alone), ``store`` (SQLite state and request log),
``limits`` (rate windows and fault draw), ``app`` (the Starlette endpoints), ``cli`` (the command line).
"""

from aiq_sandbox.cli import main

__all__ = ["main"]
