FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY stream_models stream_models
COPY sinks sinks
COPY pipeline pipeline
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["streamwarden", "run", "--domain", "all"]
