"""Dagster definitions: assets, checks, jobs, sensors, schedules, resources, partitions."""

import warnings

import dagster as dg

# BackfillPolicy.single_run() is what makes a range of days one run; its beta notice would otherwise repeat in the
# logs of every code-location load and every run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
# Code references (the UI's links from an asset to its source) are in beta; the notice would repeat on every load.
warnings.filterwarnings("ignore", message="Class `(LocalFileCodeReference|CodeReferencesMetadataValue)`",
                        category=dg.BetaWarning)
