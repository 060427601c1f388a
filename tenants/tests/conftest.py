import pytest


@pytest.fixture
def staff(db):
    """A platform staff member (superuser) for the admin site."""
    from conftest import PASSWORD
    from tenants.models import User

    return User.objects.create_superuser(email="staff@poolsaas.test", password=PASSWORD)


@pytest.fixture
def events():
    """The audit events with the given action, oldest first."""
    from audit.models import AuditEvent

    def get(action: str, **filters):
        return list(
            AuditEvent.objects.filter(action=action, **filters).order_by("created_at")
        )

    return get
