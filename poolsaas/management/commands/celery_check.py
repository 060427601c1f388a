"""`python manage.py celery_check`: a Celery probe for Kubernetes (docs/operations.md).

Exit 0 when the broker (Redis) answers and a worker answers a ping (`--worker`:
that worker, e.g. celery@$HOSTNAME for a liveness probe of its own pod); exit 1
with the reason otherwise. The same as `celery -A poolsaas inspect ping -d NAME`,
with a bounded wait and a message an operator can read.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from poolsaas.celery import app


class Command(BaseCommand):
    help = "Exit 0 when the Celery broker and a worker answer, 1 otherwise."

    def add_arguments(self, parser):
        parser.add_argument(
            "--worker", default=None, help="this worker only (celery@host)"
        )
        parser.add_argument("--timeout", type=float, default=5.0)

    def handle(self, *args, **options):
        if app.conf.task_always_eager:
            self.stdout.write("celery runs tasks inline here (no REDIS_URL): ok")
            return
        timeout = options["timeout"]
        started = time.monotonic()
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            raise CommandError(
                f"celery broker unreachable ({type(exc).__name__})"
            ) from None
        destination = [options["worker"]] if options["worker"] else None
        replies = app.control.ping(timeout=timeout, destination=destination)
        names = sorted(name for reply in replies for name in reply)
        if not names:
            who = options["worker"] or "any worker"
            raise CommandError(f"no answer to the ping from {who} within {timeout:g} s")
        took = time.monotonic() - started
        self.stdout.write(f"celery ok: {', '.join(names)} ({took:.2f} s)")
