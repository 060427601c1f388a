from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Recompute every audit hash chain and report the first broken link."

    def handle(self, *args, **options):
        broken_chains = 0
        total = 0
        for key, checked, broken in audit_chain_verify():
            total += checked
            if broken is None:
                self.stdout.write(f"chain {key}: {checked} events, intact")
                continue
            broken_chains += 1
            self.stdout.write(
                f"chain {key}: BROKEN at event #{broken.seq}"
                + (f" ({broken.code})" if broken.code else "")
                + f": {broken.reason}"
            )
        if broken_chains:
            raise CommandError(f"{broken_chains} audit chain(s) broken.")
        self.stdout.write(
            self.style.SUCCESS(f"All audit chains intact ({total} events).")
        )
