"""POSIX TZ rules ("CET-1CEST,M3.5.0,M10.5.0/3") and calendar arithmetic.

Pure and MicroPython-compatible: the board has no zoneinfo database, so the cloud sends
the POSIX rule of the pool's IANA zone and the device works out local time and DST from
it. Calendar maths is done here on Unix seconds instead of with `time.gmtime`, because
MicroPython ports disagree on the epoch (1970 vs 2000).
"""

DAY = 86400
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def month_days(y, m):
    if m == 2 and is_leap(y):
        return 29
    return _MONTH_DAYS[m - 1]


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day number counted from 1970-01-01."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def weekday(days):
    """Monday = 0 .. Sunday = 6 (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def split(local_s):
    """(year, month, day, hour, minute, second, weekday Monday=0) of local seconds."""
    days = local_s // DAY
    sod = local_s - days * DAY
    y, m, d = civil_from_days(days)
    return (y, m, d, sod // 3600, sod % 3600 // 60, sod % 60, weekday(days))


class _Parser:
    def __init__(self, s):
        self.s = s
        self.i = 0

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def fail(self, msg):
        raise ValueError(f"bad TZ {self.s!r}: {msg} at {self.i}")

    def name(self):
        s = self.s
        if self.peek() == "<":
            j = s.find(">", self.i)
            if j < 0:
                self.fail("unterminated <name>")
            n = s[self.i + 1 : j]
            if len(n) < 3:
                self.fail("name too short")
            for c in n:
                if not (c.isalpha() or c.isdigit() or c in "+-"):
                    self.fail("bad name")
            self.i = j + 1
            return n
        j = self.i
        while j < len(s) and s[j].isalpha():
            j += 1
        if j - self.i < 3:
            self.fail("name needs 3+ letters")
        n = s[self.i : j]
        self.i = j
        return n

    def number(self, lo, hi):
        j = self.i
        while j < len(self.s) and self.s[j].isdigit():
            j += 1
        if j == self.i or j - self.i > 3:
            self.fail("number expected")
        v = int(self.s[self.i : j])
        if not lo <= v <= hi:
            self.fail("number out of range")
        self.i = j
        return v

    def hms(self, max_h):
        """[+|-]hh[:mm[:ss]] as signed seconds."""
        sign = 1
        if self.peek() in ("+", "-"):
            sign = -1 if self.peek() == "-" else 1
            self.i += 1
        secs = self.number(0, max_h) * 3600
        if self.peek() == ":":
            self.i += 1
            secs += self.number(0, 59) * 60
            if self.peek() == ":":
                self.i += 1
                secs += self.number(0, 59)
        return sign * secs

    def rule(self):
        c = self.peek()
        if c == "M":
            self.i += 1
            m = self.number(1, 12)
            self.expect(".")
            w = self.number(1, 5)
            self.expect(".")
            d = self.number(0, 6)
            r = ("M", m, w, d)
        elif c == "J":
            self.i += 1
            r = ("J", self.number(1, 365), 0, 0)
        elif c.isdigit():
            r = ("N", self.number(0, 365), 0, 0)
        else:
            self.fail("rule expected")
        t = 7200
        if self.peek() == "/":
            self.i += 1
            # RFC 8536 extension: -167..167 hours, used by a few zones.
            t = self.hms(167)
        return r + (t,)

    def expect(self, ch):
        if self.peek() != ch:
            self.fail(f"{ch!r} expected")
        self.i += 1


def _rule_day(rule, y):
    """Day number (since 1970) on which a rule fires in year y."""
    kind, a, w, d = rule[0], rule[1], rule[2], rule[3]
    jan1 = days_from_civil(y, 1, 1)
    if kind == "J":
        # Jn counts 1..365 and never counts February 29.
        return jan1 + a - 1 + (1 if is_leap(y) and a >= 60 else 0)
    if kind == "N":
        return jan1 + a
    first = days_from_civil(y, a, 1)
    # POSIX day d: 0 = Sunday; our weekday(): 0 = Monday.
    first_dow = (weekday(first) + 1) % 7
    day = first + (d - first_dow) % 7 + 7 * (w - 1)
    last = first + month_days(y, a) - 1
    while day > last:
        day -= 7
    return day


class PosixTZ:
    """A parsed POSIX TZ string; offsets are seconds east of UTC (local = utc + off)."""

    def __init__(self, spec):
        if not isinstance(spec, str) or not 1 <= len(spec) <= 64:
            raise ValueError("TZ must be a string of 1..64 chars")
        self.spec = spec
        p = _Parser(spec)
        self.std_name = p.name()
        self.std = -p.hms(24)
        self.dst_name = None
        self.dst = self.std
        self.start = self.end = None
        if p.peek():
            self.dst_name = p.name()
            self.dst = self.std + 3600
            if p.peek() not in ("", ","):
                self.dst = -p.hms(24)
            if p.peek() == ",":
                p.i += 1
                self.start = p.rule()
                p.expect(",")
                self.end = p.rule()
            else:
                # POSIX leaves the default implementation-defined; glibc uses US rules.
                self.start = ("M", 3, 2, 0, 7200)
                self.end = ("M", 11, 1, 0, 7200)
        if p.peek():
            p.fail("trailing characters")
        self._year = None
        self._span = None

    def _transitions(self, y):
        if self._year != y:
            s = _rule_day(self.start, y) * DAY + self.start[4] - self.std
            e = _rule_day(self.end, y) * DAY + self.end[4] - self.dst
            self._year, self._span = y, (s, e)
        return self._span

    def is_dst(self, t):
        if self.start is None:
            return False
        y = civil_from_days((t + self.std) // DAY)[0]
        s, e = self._transitions(y)
        if s < e:
            return s <= t < e
        # Southern hemisphere: DST spans the new year.
        return not (e <= t < s)

    def utcoffset(self, t):
        return self.dst if self.is_dst(t) else self.std

    def local(self, t):
        """Local wall-clock seconds (as if the local time were UTC) of Unix time t."""
        return t + self.utcoffset(t)

    def to_utc(self, local_s):
        """Unix time of a local wall-clock time; in a gap, the moment after the jump."""
        off = self.utcoffset(local_s - self.std)
        t = local_s - off
        off2 = self.utcoffset(t)
        if off2 != off:
            t2 = local_s - off2
            # Inside a DST gap neither offset round-trips; take the later instant.
            t = t2 if self.utcoffset(t2) == off2 else max(t, t2)
        return t

    def next_midnight(self, t):
        """Unix time of the next local midnight after t."""
        day = self.local(t) // DAY
        return self.to_utc((day + 1) * DAY)


UTC = None


def parse(spec):
    return PosixTZ(spec)


def utc():
    global UTC
    if UTC is None:
        UTC = PosixTZ("UTC0")
    return UTC
