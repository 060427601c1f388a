"""The live pool page: controls and event log. Its live part is static/js/pool.js
talking to devices.consumers."""

from django.shortcuts import render

from devices.selectors import pool_device, pool_get_for_member, pool_snapshot
from devices.views.member_page import member_page
from ota.views.devices import pool_page_context


@member_page
def pool_detail(request, code):
    pool = pool_get_for_member(membership=request.membership, code=code)
    snapshot = pool_snapshot(membership=request.membership, pool=pool)
    device = pool_device(pool)
    # The firmware updates section and any consent a campaign waits for (ota app).
    ota = pool_page_context(membership=request.membership, pool=pool, device=device)
    return render(
        request,
        "devices/pool_detail.html",
        {"pool": pool, "device": device, "snapshot": snapshot, **ota},
    )
