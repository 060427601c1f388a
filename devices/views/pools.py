from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from devices.selectors import pools_for_member


@login_required
def pools(request):
    if request.membership is None:
        return render(request, "devices/no_tenant.html", status=200)
    search = request.GET.get("q", "").strip()[:100]
    page = Paginator(pools_for_member(membership=request.membership, search=search), 50)
    return render(
        request,
        "devices/pools.html",
        {"page": page.get_page(request.GET.get("page")), "search": search},
    )
