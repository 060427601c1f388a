from django.apps import AppConfig


def _session_started(sender, request, user, **kwargs):
    # Every way in (login page, code step, invitation, admin, tests' force_login)
    # ends in django.contrib.auth.login, which sends this once the session names
    # the user. The API sends it too (for django-axes), with no login session.
    from django.contrib.auth import SESSION_KEY

    session = getattr(request, "session", None)
    if session is not None and SESSION_KEY in session:
        from tenants.services import user_session_start

        user_session_start(request=request, user=user)


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and identity"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        user_logged_in.connect(_session_started, dispatch_uid="tenants.session_started")
