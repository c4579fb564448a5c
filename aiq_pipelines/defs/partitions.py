"""Business-day partitions: local dates in POS_TIMEZONE, today included so the day can sync while it runs."""

import dagster as dg

from aiq_pipelines.settings import Settings, get_settings


def business_days(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=settings.pos_start_date.isoformat(),
        timezone=settings.pos_timezone,
        end_offset=1,
    )


daily_partitions = business_days(get_settings())
