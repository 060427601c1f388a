"""The pool's history page: temperature and running-time charts over a day, a week
or a month, and the same range's samples as a CSV file.

The buckets come from telemetry.selectors.telemetry_history, the same bucketing as
the API's history endpoint (telemetry.api.views).
"""

import csv
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from devices.selectors import pool_get_for_member
from devices.views.member_page import member_page
from telemetry.selectors import pool_utc_offset, telemetry_for_export, telemetry_history

# range -> (span, temperature bucket, runtime bucket): at most ~360 points a chart.
RANGES = {
    "day": (timedelta(days=1), 300, 3600),
    "week": (timedelta(days=7), 1800, 86400),
    "month": (timedelta(days=30), 7200, 86400),
}


@member_page
def pool_history(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    range_name = request.GET.get("range", "day")
    if range_name not in RANGES:
        return render(
            request,
            "telemetry/pool_history.html",
            {
                "pool": pool,
                "error": "Pick a range of day, week or month.",
                "ranges": RANGES,
            },
            status=400,
        )
    span, size, runtime_size = RANGES[range_name]
    end = timezone.now()
    start = end - span
    if request.GET.get("format") == "csv":
        return _history_csv(pool, start, end, range_name)
    temperature = telemetry_history(pool=pool, start=start, end=end, size=size)
    runtime = telemetry_history(pool=pool, start=start, end=end, size=runtime_size)
    now_ts = end.timestamp()
    chart = {
        "range": range_name,
        "timezone": pool.timezone,
        "offset": pool_utc_offset(pool=pool, at=end),
        # Each point sits mid-bucket; the running bucket's at most at "now".
        "temperature": [
            [
                min(row["start"].timestamp() + row["size"] / 2, now_ts),
                row["temperature_avg"],
                row["temperature_min"],
                row["temperature_max"],
            ]
            for row in temperature
            if row["temperature_avg"] is not None
        ],
        # Hours of pump (and of each valve mode while pumping) per bucket, estimated
        # from the share of samples over the part of the bucket already lived.
        "runtime": [
            [
                row["start"].timestamp(),
                *(
                    round((row[key] or 0) * row["seconds"] / 3600, 2)
                    for key in ("pump_on", "mode1", "mode2")
                ),
            ]
            for row in runtime
        ],
        "runtime_size": runtime_size,
        "start": start.timestamp(),
        "end": end.timestamp(),
        "mode1_name": pool.mode1_name,
        "mode2_name": pool.mode2_name,
    }
    return render(
        request,
        "telemetry/pool_history.html",
        {
            "pool": pool,
            "range": range_name,
            "ranges": RANGES,
            "chart": chart,
            "points": len(chart["temperature"]),
        },
    )


class _Echo:
    def write(self, value):
        return value


def _history_csv(pool, start, end, range_name):
    """Every sample of the range, in the pool's words: its local time and its valve
    mode names."""
    writer = csv.writer(_Echo())
    tz = ZoneInfo(pool.timezone)
    names = {1: pool.mode1_name, 2: pool.mode2_name}

    def rows():
        yield writer.writerow(
            [
                "time_utc",
                f"time_local ({pool.timezone})",
                "temperature_c",
                "pump",
                "valve",
                "rssi_dbm",
            ]
        )
        for ts, temperature, pump, valve, rssi in telemetry_for_export(
            pool=pool, start=start, end=end
        ):
            yield writer.writerow(
                [
                    ts.isoformat(),
                    ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
                    "" if temperature is None else temperature,
                    "" if pump is None else ("on" if pump else "off"),
                    "" if valve is None else names.get(valve, valve),
                    "" if rssi is None else rssi,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    filename = f"pool-{pool.code.hex[:8]}-{range_name}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
