# syntax=docker/dockerfile:1
# Multi-stage: wheels are built in the first stage, the runtime image has no compiler
# and runs as an unprivileged user.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POOLSAAS_VAR_DIR=/var/lib/poolsaas
RUN groupadd --system poolsaas && useradd --system --gid poolsaas --home /app poolsaas \
    && mkdir -p /var/lib/poolsaas && chown poolsaas:poolsaas /var/lib/poolsaas
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=poolsaas:poolsaas . .
# collectstatic needs settings but no secrets of value: throwaway keys for this step.
RUN DEBUG=false SECRET_KEY=collectstatic-only \
    FIELD_ENCRYPTION_KEYS=kYzjXz9Ybrck8T9-BGcC0V7EhDxyDOiBVDzBh6-2wnA= \
    python manage.py collectstatic --noinput
USER poolsaas
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "poolsaas.asgi:application"]
