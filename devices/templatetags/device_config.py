"""`{% config_status pool device as config %}`: what the pool's ps1 device did with
the pool's configuration (devices.services.programs.pool_config_status)."""

from django import template

from devices.services.programs import pool_config_status

register = template.Library()


@register.simple_tag
def config_status(pool, device):
    return pool_config_status(pool=pool, device=device)
