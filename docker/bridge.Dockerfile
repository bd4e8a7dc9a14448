# The voicebridge service (`voicebridge serve`): ARI controller, AudioSocket server, orchestrators.
FROM python:3.11-slim-bookworm

# espeak-ng: the offline TTS provider (providers.tts = "espeak"), also used by the demo.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY orchestrator ./orchestrator
COPY dialogue_maps ./dialogue_maps
RUN pip install --no-cache-dir .

CMD ["voicebridge", "serve"]
