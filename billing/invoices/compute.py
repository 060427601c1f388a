"""What a month costs, in plain values (no database): the period, the plan segments,
the lines, their rounding, and the documents' numbers and money text."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

INVOICE_PREFIX = "INV"
CREDIT_NOTE_PREFIX = "CN"


class InvoiceError(Exception):
    """A document cannot be issued or corrected as asked; the message says why."""


# --- the period ---


@dataclasses.dataclass(frozen=True)
class Period:
    """Days [start, end) in UTC."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def start_at(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time.min, tzinfo=dt.UTC)

    def end_at(self) -> dt.datetime:
        return dt.datetime.combine(self.end, dt.time.min, tzinfo=dt.UTC)

    def label(self) -> str:
        last = self.end - dt.timedelta(days=1)
        return f"{self.start:%d %b} – {last:%d %b %Y}"


def month_of(day: dt.date) -> Period:
    """The calendar month that holds the day."""
    start = day.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return Period(start, end)


def previous_month(day: dt.date) -> Period:
    return month_of(day.replace(day=1) - dt.timedelta(days=1))


# --- plans and their days ---


@dataclasses.dataclass(frozen=True)
class PlanTerms:
    """What a plan charges: a monthly fee, and per usage kind what is included and
    the price of 1,000 units beyond it (0: metered, not charged)."""

    code: str
    name: str
    monthly_fee_cents: int
    included: Mapping[str, int] = dataclasses.field(default_factory=dict)
    overage_cents_per_1000: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Segment:
    """One plan in force for days [start, end) of a period."""

    terms: PlanTerms
    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def plan_segments(
    *,
    period: Period,
    initial: PlanTerms | None,
    changes: Iterable[tuple[dt.date, PlanTerms | None]] = (),
    active_from: dt.date | None = None,
) -> list[Segment]:
    """The period cut into whole days per plan.

    `initial` is the plan in force when the period starts, `changes` the (day, plan)
    switches during it (a switch counts from its day on; of two on one day the later
    wins). Days before `active_from` (the tenant's first day) and days without a plan
    are not billed."""
    first = max(period.start, active_from or period.start)
    points: dict[dt.date, PlanTerms | None] = {first: initial}
    for day, terms in sorted(changes, key=lambda c: c[0]):
        if day >= period.end:
            continue
        points[max(day, first)] = terms
    days = sorted(d for d in points if d < period.end)
    segments = []
    for i, day in enumerate(days):
        end = days[i + 1] if i + 1 < len(days) else period.end
        terms = points[day]
        if terms is None or end <= day:
            continue
        if segments and segments[-1].terms == terms and segments[-1].end == day:
            segments[-1] = Segment(terms, segments[-1].start, end)
        else:
            segments.append(Segment(terms, day, end))
    return segments


# --- lines ---


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of a document. Amounts in cents; negative on a credit note."""

    kind: str  # "plan", "usage" or "credit"
    description: str
    quantity: Decimal
    unit: str
    unit_price_cents: Decimal
    amount_cents: int
    usage_kind: str = ""
    period_start: dt.date | None = None
    period_end: dt.date | None = None


def cents(value: Decimal) -> int:
    """Commercial rounding to a whole cent (half away from zero)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def prorate(*, monthly_cents: int, days: int, period_days: int) -> int:
    """The part of a monthly amount that `days` of a `period_days` month cost."""
    if not 0 <= days <= period_days:
        raise ValueError("days must lie inside the period")
    return cents(Decimal(monthly_cents) * days / period_days)


USAGE_LABELS = {
    "messages_in": "Device messages",
    "messages_dropped": "Device messages dropped over the plan",
    "api_calls": "API calls",
    "samples_stored": "Stored telemetry samples",
    "active_devices": "Active devices (highest day)",
    "ota_bytes": "OTA bytes",
    "socket_minutes:gateway": "Gateway socket minutes",
    "socket_minutes:dashboard": "Dashboard socket minutes",
    "gateway_messages": "Gateway messages",
}


def usage_label(kind: str) -> str:
    if kind in USAGE_LABELS:
        return USAGE_LABELS[kind]
    if kind.startswith("commands_out:"):
        return f"Commands ({kind.partition(':')[2]})"
    return kind.replace("_", " ").capitalize()


def invoice_lines(
    *, period: Period, segments: Sequence[Segment], usage: Mapping[str, int]
) -> list[Line]:
    """The lines of a month: each plan segment's prorated fee, then each usage kind.

    What a plan includes is prorated like its fee (a plan held for 10 of 30 days
    includes a third of its monthly quantity); usage beyond the sum is charged at the
    price of the plan in force at the end of the period."""
    lines = []
    for seg in segments:
        full = seg.days == period.days
        note = "" if full else f" ({seg.days} of {period.days} days)"
        last = seg.end - dt.timedelta(days=1)
        lines.append(
            Line(
                kind="plan",
                description=f"{seg.terms.name} plan, {seg.start:%d %b} – "
                f"{last:%d %b %Y}{note}",
                quantity=Decimal(1) if full else Decimal(seg.days) / period.days,
                unit="month",
                unit_price_cents=Decimal(seg.terms.monthly_fee_cents),
                amount_cents=prorate(
                    monthly_cents=seg.terms.monthly_fee_cents,
                    days=seg.days,
                    period_days=period.days,
                ),
                period_start=seg.start,
                period_end=seg.end,
            )
        )
    last_terms = segments[-1].terms if segments else None
    # Every kind used, and every kind a plan includes (shown even when unused).
    kinds = set(usage) | {k for seg in segments for k in seg.terms.included}
    for kind in sorted(kinds):
        used = int(usage.get(kind, 0))
        included = sum(
            Decimal(seg.terms.included.get(kind, 0)) * seg.days / period.days
            for seg in segments
        )
        included_units = int(included.to_integral_value(rounding=ROUND_HALF_UP))
        price = Decimal(
            last_terms.overage_cents_per_1000.get(kind, 0) if last_terms else 0
        )
        over = max(0, used - included_units)
        if included_units:
            description = f"{usage_label(kind)}: {used:,}, {included_units:,} included"
        else:
            description = f"{usage_label(kind)}: {used:,}"
        quantity = Decimal(over) / 1000
        lines.append(
            Line(
                kind="usage",
                description=description,
                quantity=quantity,
                unit="1,000",
                unit_price_cents=price,
                amount_cents=cents(quantity * price),
                usage_kind=kind,
            )
        )
    return lines


def lines_total(lines: Iterable[Line]) -> int:
    return sum(line.amount_cents for line in lines)


def invoice_number(*, prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year}-{seq:05d}"


def money(amount_cents: int, currency: str) -> str:
    """1234 -> "12.34 EUR" (the same text on the page, in the PDF and the mail)."""
    sign = "-" if amount_cents < 0 else ""
    whole, rest = divmod(abs(amount_cents), 100)
    return f"{sign}{whole:,}.{rest:02d} {currency}"
