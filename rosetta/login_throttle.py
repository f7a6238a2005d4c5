"""Failed logins are counted per client address in the cache (Redis); past the limit, every
login door (the admin's, the browsable API's, the token endpoint) refuses that address until
the window ends, even with the right password, so passwords cannot be guessed at speed."""

from functools import wraps

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpResponse
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled


def _key(request) -> str:
    return f"login-failures:{request.META.get('REMOTE_ADDR', '')}"


def locked_out(request) -> bool:
    return cache.get(_key(request), 0) >= settings.ROSETTA_LOGIN_FAILURE_LIMIT


@receiver(user_login_failed)
def count_failed_login(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    key = _key(request)
    # The window starts at the first failure and is not extended by later ones.
    cache.add(key, 0, timeout=settings.ROSETTA_LOGIN_LOCKOUT_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=settings.ROSETTA_LOGIN_LOCKOUT_SECONDS)


def refusal_text() -> str:
    minutes = max(1, settings.ROSETTA_LOGIN_LOCKOUT_SECONDS // 60)
    return f"Too many failed logins from your address: try again in up to {minutes} minute(s)."


def throttled_login(view):
    """Wrap a login view (the admin's, DRF's browsable login): a locked-out address gets 429."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method == "POST" and locked_out(request):
            response = HttpResponse(refusal_text(), status=429, content_type="text/plain")
            response["Retry-After"] = str(settings.ROSETTA_LOGIN_LOCKOUT_SECONDS)
            return response
        return view(request, *args, **kwargs)

    return wrapped


class ObtainTokenView(ObtainAuthToken):
    """POST username and password, get the user's API token; refused (429) after repeated failures."""

    def post(self, request, *args, **kwargs):
        if locked_out(request):
            raise Throttled(wait=settings.ROSETTA_LOGIN_LOCKOUT_SECONDS, detail=refusal_text())
        return super().post(request, *args, **kwargs)
