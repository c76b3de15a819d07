# Janus: one image for every role (policy apply, coordinator, workers, exporter, producer).
#   docker build -t janus .
#   docker run --rm janus --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package build (hatchling) needs pyproject.toml, README.md (the `readme` field),
# src/janus and lua/ (force-included into the wheel as janus/lua).
COPY pyproject.toml README.md ./
COPY src/ src/
COPY lua/ lua/
RUN pip install --no-cache-dir . \
    && python -c "from janus import scripts; scripts.library()"

# Shipped policies and the example handlers/producer (imported from the working directory:
# `janus worker ... --handler examples.handlers:charge`, `python -m examples.producer`).
COPY policies/ policies/
COPY examples/ examples/

RUN useradd --system --uid 10001 --no-create-home --home-dir /app janus
USER janus

ENTRYPOINT ["janus"]
CMD ["--help"]
