from django.contrib import admin
from django.urls import include, path

from .api import api
from .views.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("", include("reviewapp.views.urls")),
]
