# DSU separation service, CPU image: `docker build -t dsu-serve .`
#   docker run -p 8002:8002 -v dsu-data:/data dsu-serve
# Models are pulled at build time (checksummed), so the container never downloads at run
# time: --build-arg DSU_MODELS="htdemucs mdx_q" --build-arg DEMUCS_MODEL=mdx_q
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 dsu
WORKDIR /app

# The CPU build of torch first: an unpinned torch from PyPI is the multi-GB CUDA build.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[service,celery,quantized,openvino]"

ARG DSU_MODELS="htdemucs"
ARG DEMUCS_MODEL="htdemucs"
ENV DSU_MODELS_DIR=/models \
    DSU_DATA_DIR=/data \
    DEMUCS_MODEL=${DEMUCS_MODEL} \
    HOST=0.0.0.0 \
    PORT=8002 \
    SEPARATION_TIMEOUT=600

RUN mkdir -p /models /data && chown dsu:dsu /models /data
USER dsu
RUN if [ -n "$DSU_MODELS" ]; then dsu models pull -q $DSU_MODELS; fi

VOLUME ["/data"]
EXPOSE 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8002'), timeout=4)"

CMD ["dsu", "serve"]
