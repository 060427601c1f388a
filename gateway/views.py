"""The example dashboard of the MQTT gateway (/mqtt-demo/): a static page whose script
logs in with POST /api/login and speaks MQTT to /mqtt with MQTT.js, as an integrator's
dashboard would. It needs no session: the login form is the page's own."""

from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def mqtt_demo(request):
    return render(request, "gateway/demo.html")
