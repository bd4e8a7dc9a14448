# Debian's redis-server, for registries-free machines (compose's "redis" service).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
# No persistence: Redis holds only the audio cache, which `voicebridge cache warm` rebuilds.
CMD ["redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"]
