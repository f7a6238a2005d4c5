"""Filter backends every API list shares (a module of its own: DRF imports it while loading)."""

from rest_framework import filters, serializers


class SearchFilter(filters.SearchFilter):
    """DRF's search, whose bad terms (a NUL character) are a field error like any other."""

    def get_search_terms(self, request):
        try:
            return super().get_search_terms(request)
        except serializers.ValidationError as error:
            raise serializers.ValidationError({self.search_param: error.detail}) from None
