# One image for every service; the command picks which one a container runs.
FROM python:3.11-slim-bookworm
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app LOG_FORMAT=json \
    MALLOC_ARENA_MAX=2
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY contracts ./contracts
COPY infra ./infra
COPY services ./services
COPY scripts ./scripts
COPY demo ./demo
RUN pip install --no-cache-dir --no-deps -e .
USER nobody
