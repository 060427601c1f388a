"""Issued invoices and their lines cannot change in the database either: a trigger
refuses an UPDATE of any column but the payment and delivery ones, and any UPDATE or
DELETE of a line (QuerySet.update and raw SQL skip the models' save())."""

from django.db import migrations

MUTABLE = ["status", "amount_paid_cents", "paid_at", "payment_intent_id", "emailed_at"]
FROZEN = [
    "code",
    "tenant_id",
    "kind",
    "number",
    "period_start",
    "period_end",
    "issued_at",
    "billed_to",
    "currency",
    "total_cents",
    "corrects_id",
    "reason",
]

PG_FORWARD = f"""
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'issued invoice % cannot be deleted', OLD.number
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF (to_jsonb(NEW) - ARRAY[{", ".join(f"'{c}'" for c in MUTABLE)}])
     IS DISTINCT FROM (to_jsonb(OLD) - ARRAY[{", ".join(f"'{c}'" for c in MUTABLE)}])
  THEN
    RAISE EXCEPTION 'issued invoice % cannot change; issue a credit note', OLD.number
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE OR DELETE ON billing_invoice
  FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE OR REPLACE FUNCTION billing_invoiceline_frozen() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'lines of an issued invoice cannot change'
    USING ERRCODE = 'integrity_constraint_violation';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoiceline_frozen BEFORE UPDATE OR DELETE ON billing_invoiceline
  FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_frozen();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_frozen();
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_frozen();
"""

# SQLite (the embedded default): updates only. Its test flush empties tables with
# DELETE, which a delete trigger would refuse; the models refuse deletes.
_changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN)
SQLITE_FORWARD = [
    f"""CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE ON billing_invoice
    WHEN {_changed}
    BEGIN SELECT RAISE(ABORT, 'issued invoice cannot change; issue a credit note');
    END;""",
    """CREATE TRIGGER billing_invoiceline_frozen BEFORE UPDATE ON billing_invoiceline
    BEGIN SELECT RAISE(ABORT, 'lines of an issued invoice cannot change'); END;""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_invoice_frozen;",
    "DROP TRIGGER IF EXISTS billing_invoiceline_frozen;",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for sql in SQLITE_FORWARD:
            schema_editor.execute(sql, params=None)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif vendor == "sqlite":
        for sql in SQLITE_BACKWARD:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_invoices")]

    operations = [migrations.RunPython(forward, backward)]
