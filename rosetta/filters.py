"""Filter backends every API list shares (a module of its own: DRF imports it while loading)."""

from datetime import UTC

import django_filters
from rest_framework import filters, serializers


class SearchFilter(filters.SearchFilter):
    """DRF's search, whose bad terms (a NUL character) are a field error like any other."""

    def get_search_terms(self, request):
        try:
            return super().get_search_terms(request)
        except serializers.ValidationError as error:
            raise serializers.ValidationError({self.search_param: error.detail}) from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time filter that compares in UTC: PostgreSQL refuses offsets past ±15:59
    (e.g. "-23:22"), which ISO 8601 and Python accept, and would answer a 500."""

    def filter(self, qs, value):
        if value is not None:
            value = value.astimezone(UTC)
        return super().filter(qs, value)
