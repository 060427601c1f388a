from django.apps import AppConfig


class OtaConfig(AppConfig):
    name = "ota"
    verbose_name = "Over-the-air updates"
    default_auto_field = "django.db.models.BigAutoField"
