"""``python -m aiq_sandbox``: the same as the ``aiq-sandbox`` command."""

from aiq_sandbox.cli import main

main()
