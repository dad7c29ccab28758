# syntax=docker/dockerfile:1
# gouache in one container: `gouache run` (bot, web playground, supervised GPU worker) by default,
# `gouache worker` for scale-out. docs/deploy.md is the guide; compose.yaml runs both layouts.
#
# CUDA-capable without a CUDA base image: the torch wheel pinned in pyproject.toml is a CUDA
# build that bundles its CUDA runtime, so the host needs only the NVIDIA driver and the NVIDIA
# Container Toolkit. At start the worker logs whether CUDA is usable and on which device.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/gouache \
    PATH=/opt/gouache/bin:$PATH

# torch.compile (`speed.compile = "on"`) builds its kernels with a compiler: Triton's launchers
# with gcc on CUDA, Inductor's C++ kernels with g++ on the CPU. g++ brings libc6-dev (through
# libstdc++-12-dev) matched to the image's libc; the Python headers come with the base image.
# The meta-packages are pinned; the compiler behind them follows bookworm's security updates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 g++=4:12.2.0-3 \
 && rm -rf /var/lib/apt/lists/*

# The same install script `make` and CI run (scripts/install.sh), plus a check that the torch
# it installed is the CUDA build; the gguf extra reads quantized transformer files (.gguf).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY gouache ./gouache
RUN bash scripts/install.sh --venv /opt/gouache --require-cuda-build --extras gguf \
 && groupadd --gid 10001 gouache \
 && useradd --uid 10001 --gid 10001 --home-dir /home/gouache --create-home gouache \
 && mkdir -p /data \
 && chown 10001:10001 /data

# One volume holds everything that lasts: the SQLite database and artifacts, the generated web
# token (/data/web-token), the Hugging Face model cache (HF_HOME) and torch.compile's kernel
# caches (a restarted worker's warm-up reuses them). Bound to 0.0.0.0, the web
# playground requires a token: GOUACHE_WEB__TOKEN_FILE, or one generated at first start.
ENV GOUACHE_DATA_DIR=/data \
    GOUACHE_HOST=0.0.0.0 \
    GOUACHE_PORT=8080 \
    HF_HOME=/data/huggingface \
    TORCHINDUCTOR_CACHE_DIR=/data/cache/torchinductor \
    TRITON_CACHE_DIR=/data/cache/triton \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# Follows GOUACHE_PORT (and a TOML file's port): `gouache healthcheck` reads the same settings.
# Healthy means the database answers and a worker has heartbeated; loading a model takes time.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 CMD ["gouache", "healthcheck"]
CMD ["gouache", "run"]
