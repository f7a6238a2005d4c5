"""Rosetta's admin site: its own title, and the front page ("is anything wrong?") as
the index, with the overview one link away. Installed through RosettaAdminConfig, so
every app's @admin.register lands here."""

from django.contrib import admin
from django.urls import path


class RosettaAdminSite(admin.AdminSite):
    site_header = "Rosetta"
    site_title = "Rosetta"
    index_title = "Is anything wrong?"
    index_template = "admin/rosetta_front.html"

    def index(self, request, extra_context=None):
        from .front_page import front_page_context

        user = request.user
        context = {}
        if user.has_perm("pipelines.view_pipeline") and user.has_perm("sources.view_source"):
            context = front_page_context(request)
        context["show_front_page"] = bool(context)
        return super().index(request, {**context, **(extra_context or {})})

    def get_urls(self):
        from .admin_overview import overview_view

        return [
            path("overview/", self.admin_view(overview_view), name="rosetta_overview"),
            *super().get_urls(),
        ]
