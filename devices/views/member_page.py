"""What every dashboard page shares: the member_page guard and the shape of a
ValidationError's messages for a form."""

import functools

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import render


def member_page(view):
    """Login required, a current tenant required (else 404), and a role too low
    answered as a 403 page that says which role is needed."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.membership is None:
            raise Http404("Not found.")
        try:
            return view(request, *args, **kwargs)
        except PermissionDenied as exc:
            return render(
                request,
                "devices/pool_forbidden.html",
                {"message": str(exc) or "You may not do this."},
                status=403,
            )

    return wrapper


def form_errors(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {key: list(value) for key, value in exc.message_dict.items()}
    return {"__all__": list(exc.messages)}
