# The offer engine: one image for the API, the scheduler and the one-shot migration
# (see docker-compose.yml). Build: docker build -t offer-engine .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every dependency ships as a wheel for this platform, so no compiler is needed.
COPY . /tmp/src
RUN pip install /tmp/src && rm -rf /tmp/src

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown -R app:app /app
WORKDIR /app
USER app

EXPOSE 8000

# No curl in the slim image: python asks /health (database + hot state); an HTTP error or a
# refused connection raises, which exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# Production by default: refuses to start without OFFER_ENGINE_SECRET_KEY and the four API keys.
CMD ["offer-engine", "serve", "--host", "0.0.0.0", "--port", "8000"]
