import json

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination


class PageSizePagination(PageNumberPagination):
    """Page numbers, with ?page_size= up to 500 for scripts that page through everything."""

    page_size_query_param = "page_size"
    max_page_size = 500


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to EXACT_UP_TO rows; past that, takes PostgreSQL's planner
    estimate (EXPLAIN) instead of COUNT(*) over millions of rows.

    Past the exact range the count, and so the number of pages, is approximate:
    any page number is served (a page past the real end is empty), and a page has
    a next page when it is full, so paging through everything still works.
    """

    EXACT_UP_TO = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list.order_by()
        exact = queryset[: self.EXACT_UP_TO + 1].count()
        if exact <= self.EXACT_UP_TO:
            return exact
        return max(self.EXACT_UP_TO + 1, self._estimate(queryset))

    @cached_property
    def estimated(self) -> bool:
        return self.count > self.EXACT_UP_TO

    @staticmethod
    def _estimate(queryset) -> int:
        query, params = queryset.query.sql_with_params()
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {query}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def validate_number(self, number):
        if not self.estimated:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def page(self, number):
        if not self.estimated:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return EstimatedPage(self.object_list[bottom : bottom + self.per_page], number, self)


class EstimatedPage(Page):
    def has_next(self) -> bool:
        return len(self) == self.paginator.per_page


class EstimatedCountPagination(PageSizePagination):
    """PageSizePagination for tables that grow without bound (runs, history): the
    "count" is exact up to 10,000 and PostgreSQL's estimate beyond."""

    django_paginator_class = EstimatedCountPaginator
