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
# The same pinned, hashed lock as `make install` (see the Makefile), plus the gpu extra
# (bitsandbytes). torch is in neither: the base image's CUDA build stays.
COPY requirements ./requirements
RUN pip install --require-hashes -r requirements/lock.txt -r requirements/gpu.txt \
    && pip install --require-hashes --no-deps -r requirements/no-deps.txt
COPY pyproject.toml README.md Makefile ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-deps --no-build-isolation -e . \
    && make static/vendor/htmx.min.js static/vendor/swagger-ui/swagger-ui-bundle.js

VOLUME ["/data"]
EXPOSE 8000
CMD ["tunelab", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
