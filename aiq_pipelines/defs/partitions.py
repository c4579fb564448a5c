"""Business-day partitions: local dates in POS_TIMEZONE, today included so the day can sync while it runs.

Dagster needs the partitions, the schedules' cron and zone and the sensor's interval when the code location is imported,
so the wiring reads them from ``settings``, the one ``Settings`` the process loads (``definitions.py`` builds the
resources from the same object).
"""

import zoneinfo

import dagster as dg

from aiq_pipelines.settings import Settings, get_settings

settings = get_settings()


def business_days(config: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=config.pos_start_date.isoformat(),
        timezone=config.pos_timezone,
        end_offset=1,
    )


daily_partitions = business_days(settings)
BUSINESS_TIMEZONE = zoneinfo.ZoneInfo(settings.pos_timezone)

# Sensors and schedules start as AUTOMATION_DEFAULT_STATUS says; once the operator turns one on or off in the UI,
# Dagster keeps that choice whatever the default.
_RUNNING = settings.automation_default_status == "running"
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if _RUNNING else dg.DefaultSensorStatus.STOPPED
SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if _RUNNING else dg.DefaultScheduleStatus.STOPPED
