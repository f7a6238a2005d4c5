from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from destinations.api import DestinationViewSet
from monitoring.api import AlertEventViewSet, SlotMetricViewSet, WalMetricViewSet
from pipelines.api import PipelineRunViewSet, PipelineViewSet
from sources.api import SourceViewSet

from .api import AuditEventViewSet, health
from .login_throttle import ObtainTokenView, throttled_login
from .metrics import metrics_view


def favicon(request):
    """Browsers ask for /favicon.ico on any page; the URL is resolved per request, since the
    production static storage knows hashed names only after collectstatic."""
    from django.http import HttpResponsePermanentRedirect
    from django.templatetags.static import static

    return HttpResponsePermanentRedirect(static("rosetta/favicon.svg"))


router = DefaultRouter()
router.register("sources", SourceViewSet)
router.register("destinations", DestinationViewSet)
router.register("pipelines", PipelineViewSet, basename="pipeline")
router.register("pipeline-runs", PipelineRunViewSet)
router.register("wal-metrics", WalMetricViewSet)
router.register("slot-metrics", SlotMetricViewSet)
router.register("alerts", AlertEventViewSet)
router.register("audit-events", AuditEventViewSet)

urlpatterns = [
    # Login doors first, throttled (the same names as the views they wrap).
    path("admin/login/", throttled_login(admin.site.login)),
    path(
        "api/auth/login/",
        throttled_login(LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    path("api/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("admin/", admin.site.urls),
    path("api/health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", favicon),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/", include(router.urls)),
]
