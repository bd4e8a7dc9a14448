"""Real provider adapters: Yandex SpeechKit v3 (gRPC) STT/TTS, OpenAI-compatible LLM and embeddings, espeak-ng TTS."""
