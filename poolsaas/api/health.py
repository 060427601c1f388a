"""GET /api/health: a liveness answer for load balancers and container health checks.

No authentication, no database, no throttle: it says the web process answers. It is also
the baseline of bench/api.py, the cheapest JSON view the same server stack can serve.
"""

from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})
