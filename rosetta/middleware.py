"""Errors under /api/ are JSON objects, whoever answers them (Django or DRF, DEBUG or not)."""

import logging
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ApiErrorsMiddleware:
    """Replaces a non-JSON error response under /api/ (Django's HTML 404, 500 or debug page)
    with {"detail": ...}; a body too large for DATA_UPLOAD_MAX_MEMORY_SIZE is a 413."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        status = getattr(request, "_rosetta_error_status", response.status_code)
        data = getattr(response, "data", None)  # DRF's error, rendered as HTML for a browser
        return JsonResponse(data if isinstance(data, dict) else {"detail": _reason(status)}, status=status)

    def process_exception(self, request, exception):
        if request.path.startswith(API_PREFIX) and isinstance(exception, RequestDataTooBig):
            request._rosetta_error_status = 413
        return None


def _reason(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status == 413:
        return f"{phrase}: the request body is larger than the server accepts."
    if status >= 500:
        return f"{phrase}: the error is in the server's log."
    return f"{phrase}."
