"""Page-number pagination for every API list (kept apart from the viewsets: DRF's
settings import it while rest_framework.generics is still loading)."""

from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
