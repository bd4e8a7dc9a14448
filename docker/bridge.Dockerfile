# The voicebridge service (`voicebridge serve`). Stages:
#   product   bridge/ + orchestrator/ (the wheel) and dialogue_maps/: what runs in production
#   standins  product + testkit/ for `voicebridge serve --standins` (the offline SpeechKit/OpenAI
#             stand-ins; demo and tests only, never deployed)
#
# BASE: `debian:bookworm-slim` from a registry, or the local debootstrap image docker/containers.sh
# makes (localhost/voicebridge-base:bookworm). Bookworm's Python 3.11 is the version we test.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS runtime
# espeak-ng: the offline TTS provider (providers.tts = "espeak") and the stand-ins' voice.
# libc++1: TEN VAD's native library (the [vad] engine "ten").
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv espeak-ng libc++1 ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    # The service runs as this unprivileged user (USER in the product stage); a fixed uid so a
    # mounted volume (e.g. for the metrics or turns file) can be given to it.
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin voicebridge
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The dependencies alone, from pyproject.toml with empty packages: this layer stays cached while
# only our code changes. Behind a TLS-inspecting proxy, mount the host's CA bundle at
# /run/host-ca.crt for the build (docker/containers.sh does): pip then trusts it.
FROM runtime AS deps
COPY pyproject.toml README.md /src/
RUN if [ -s /run/host-ca.crt ]; then export PIP_CERT=/run/host-ca.crt; fi \
    && mkdir -p /src/bridge /src/orchestrator \
    && touch /src/bridge/__init__.py /src/orchestrator/__init__.py \
    # bookworm's pip 23.0 cannot build aioari's sdist (setup_requires fetches a setuptools_scm
    # whose dependencies it does not resolve); a current pip can.
    && pip install --upgrade pip setuptools wheel \
    && pip install /src && pip uninstall -y voicebridge && rm -rf /src

FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY bridge /src/bridge
COPY orchestrator /src/orchestrator
RUN if [ -s /run/host-ca.crt ]; then export PIP_CERT=/run/host-ca.crt; fi \
    && pip wheel --no-deps --wheel-dir /wheels /src

FROM deps AS product
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY dialogue_maps /app/dialogue_maps
# Not root: the code and the venv stay root-owned and read-only to the service. Nothing needs a
# privileged port (AudioSocket 9092, admin 9180).
USER voicebridge
CMD ["voicebridge", "serve"]

FROM product AS standins
COPY testkit /app/testkit
ENV PYTHONPATH=/app
CMD ["voicebridge", "serve", "--standins"]
