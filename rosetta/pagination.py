from rest_framework.pagination import PageNumberPagination


class PageSizePagination(PageNumberPagination):
    """Page numbers, with ?page_size= up to 500 for scripts that page through everything."""

    page_size_query_param = "page_size"
    max_page_size = 500
