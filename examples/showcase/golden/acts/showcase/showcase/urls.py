from django.urls import path, re_path

from . import views

urlpatterns = [
    path("healthz", views.healthz),
    # Every other path answers with the version: a Gig's prefix shows in script_name and path.
    re_path(r"^.*$", views.index),
]
