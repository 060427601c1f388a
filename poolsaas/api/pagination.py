"""Page-number pagination for every API list (kept apart from the viewsets: DRF's
settings import it while rest_framework.generics is still loading)."""

from django.core.paginator import Paginator
from rest_framework.pagination import PageNumberPagination


class FirstPageCountingPaginator(Paginator):
    """A paginator whose first page costs one query, not two: it reads one row more
    than a page, and when that row is not there the page holds the whole list, so
    its length is the count (most tenants' lists fit one page). A longer list, or
    any other page, counts in SQL as usual."""

    def page(self, number):
        if str(number) != "1" or self.orphans:
            return super().page(number)
        rows = list(self.object_list[: self.per_page + 1])
        if len(rows) <= self.per_page:
            self.__dict__["count"] = len(rows)  # the cached_property's value
        self.validate_number(1)
        return self._get_page(rows[: self.per_page], 1, self)


class Pagination(PageNumberPagination):
    django_paginator_class = FirstPageCountingPaginator
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
