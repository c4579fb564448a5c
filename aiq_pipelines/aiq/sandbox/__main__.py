"""``python -m aiq_pipelines.aiq.sandbox``: the same as the ``aiq-sandbox`` command."""

from aiq_pipelines.aiq.sandbox.cli import main

main()
