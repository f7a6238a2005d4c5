from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from destinations.api import DestinationViewSet
from monitoring.api import AlertEventViewSet, SlotMetricViewSet, WalMetricViewSet
from pipelines.api import PipelineRunViewSet, PipelineViewSet
from sources.api import SourceViewSet

from .admin_overview import install as install_admin_overview
from .api import AuditEventViewSet, health
from .login_throttle import ObtainTokenView, throttled_login

install_admin_overview(admin.site)

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
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/", include(router.urls)),
]
