# gouache on one GPU box: the same install steps CI runs (pip install of the project), nothing
# more. Mount your models at /models and point a TOML config at them (see README).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    GOUACHE_DATA_DIR=/data \
    GOUACHE_HOST=0.0.0.0 \
    GOUACHE_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gouache ./gouache
# torch==2.14.1 (a CUDA build) and torchvision==0.29.1 are pinned together in pyproject.toml.
RUN pip install --no-cache-dir . && useradd --create-home gouache && mkdir -p /data && chown gouache /data
USER gouache
VOLUME ["/data"]
EXPOSE 8080
# Not on loopback: the web playground then requires GOUACHE_WEB__TOKEN (or _FILE).
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["gouache", "run"]
