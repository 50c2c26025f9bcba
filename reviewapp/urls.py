from django.contrib import admin
from django.urls import include, path

from .api import api
from .views.health import healthz
from .views.metrics import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", api.urls),
    path("", include("reviewapp.views.urls")),
]

# The 403 page names the missing permission and keeps the project's navigation.
handler403 = "reviewapp.views.denied.permission_denied"
