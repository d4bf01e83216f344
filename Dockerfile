# syntax=docker/dockerfile:1
# The streamwarden image: worker, console, producer (every `streamwarden` command).
#
#   docker build -t streamwarden:cpu .        # CPU build of torch (GBs smaller than the CUDA wheels PyPI gives)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t streamwarden:cuda .
#
# The CUDA build needs only the NVIDIA driver on the host (the container toolkit passes it in): torch's CUDA
# wheels bring their own CUDA runtime. docker-compose.yml builds both (the CUDA one under `--profile gpu`).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from PyTorch's own index; `pip install .` below then finds `torch>=2.2` satisfied and keeps it.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamwarden streamwarden
COPY ingest ingest
COPY stream_models stream_models
COPY sinks sinks
COPY evaluation evaluation
COPY pipeline pipeline
RUN pip install . && python -c "import torch, pipeline.cli; print('torch', torch.__version__)"
# the transaction features' Numba kernels, compiled once here (from / so the installed copy is the one compiled)
RUN cd / && NUMBA_CACHE_DIR=/opt/numba-cache python -m stream_models.transaction_features

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    NUMBA_CACHE_DIR=/var/lib/streamwarden/numba-cache \
    STREAMWARDEN_RUNNER__STATE_DIR=/var/lib/streamwarden/state
RUN useradd --create-home --uid 10001 streamwarden \
    && mkdir -p /var/lib/streamwarden/state \
    && chown -R streamwarden:streamwarden /var/lib/streamwarden
COPY --from=build /opt/venv /opt/venv
# site-packages is not the runtime user's to write: the kernel cache lives beside the state (a volume in compose)
COPY --from=build --chown=streamwarden:streamwarden /opt/numba-cache /var/lib/streamwarden/numba-cache
USER streamwarden
WORKDIR /home/streamwarden
# worker metrics (docker-compose.yml: 9101 transactions, 9102 sensors) and the console
EXPOSE 9101 9102 8700
ENTRYPOINT []
CMD ["streamwarden", "run", "--domain", "all", "--metrics-port", "9101"]
