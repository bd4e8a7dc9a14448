"""OpenAI-compatible stand-in (test/demo only): an aiohttp server on 127.0.0.1.

- POST /v1/chat/completions: scripted answers (`LlmScript`: regex on the last user message),
  streamed as SSE word by word (`stream: true`) or whole; latencies `first_token_s`, `token_s`.
  A constrained intent request (`orchestrator.adapters.llm.arbiter`: JSON response format, the
  labels as `- <label>: "example" | ...` lines of the system message) is answered
  `{"label": ...}` deterministically, and clearly not as an LLM would: a script choice rule
  first, else the label whose examples share the most character trigrams with the caller's
  words (cosine >= `choice_min_similarity`), else "none" (`choose_label`); after
  `choice_latency_s`.
- POST /v1/embeddings: deterministic local vectors (hashed character trigrams, L2-normalised), so
  texts sharing words are close: good enough for intent matching in the demo.
- POST /v1/moderations: flags inputs containing any of `flagged_words`.
Faults for the next n chat requests (`inject(kind, n)`): "http500", "stall" (never answers),
"unsafe_first" (the answer starts with `unsafe_text`), "drop" (connection cut mid-stream),
"bad_label" (a constrained request is answered with a label outside its set).
`client_disconnects` counts streams the client closed before the end (the answer was closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web

from testkit.standins import serve_until_signal
from testkit.standins.script import LlmScript

Fault = Literal["http500", "stall", "unsafe_first", "drop", "bad_label"]
_TOKEN = re.compile(r"\S+\s*")
_OPTION_LINE = re.compile(r"^- (\S+): (.*)$", re.MULTILINE)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
BAD_LABEL = "intent:not_offered"


def local_embedding(text: str, dim: int = 64) -> list[float]:
    """A deterministic bag-of-trigrams vector: shared words mean a high cosine similarity."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        padded = f" {word} "
        for i in range(len(padded) - 2):
            h = int.from_bytes(hashlib.blake2b(padded[i : i + 3].encode(), digest_size=4).digest(), "little")
            vec[h % dim] += 1.0 if h & 0x100 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def parse_options(system: str) -> dict[str, list[str]]:
    """The labels of a constrained intent request with their examples ("none" has none)."""
    out: dict[str, list[str]] = {}
    for m in _OPTION_LINE.finditer(system):
        out[m.group(1)] = [json.loads(f'"{q}"') for q in _QUOTED.findall(m.group(2))]
    return out


def choose_label(
    text: str, options: dict[str, list[str]], *, script: LlmScript, min_similarity: float, dim: int = 512
) -> str:
    """The stand-in's pick (see the module docstring): a script rule, else the nearest examples."""
    labels = [label for label in options if label != "none"]
    scripted = script.choice(text, labels)
    if scripted is not None:
        return scripted
    vec = local_embedding(text, dim)
    best, best_label = 0.0, "none"
    for label in labels:
        for example in options[label]:
            sim = sum(a * b for a, b in zip(vec, local_embedding(example, dim), strict=True))
            if sim > best:
                best, best_label = sim, label
    return best_label if best >= min_similarity else "none"


class OpenAIStandin:
    """A local OpenAI-compatible API for tests and the demo."""

    def __init__(
        self,
        script: LlmScript | None = None,
        *,
        port: int = 0,
        first_token_s: float = 0.0,
        token_s: float = 0.0,
        embedding_dim: int = 64,
        flagged_words: Sequence[str] = ("идиот",),
        unsafe_text: str = "Вы идиот, раз об этом спрашиваете.",
        choice_latency_s: float = 0.0,
        choice_min_similarity: float = 0.4,
    ) -> None:
        self.script = script or LlmScript()
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.embedding_dim = embedding_dim
        self.flagged_words = [w.lower() for w in flagged_words]
        self.unsafe_text = unsafe_text
        self.choice_latency_s = choice_latency_s
        self.choice_min_similarity = choice_min_similarity
        self.choices: list[tuple[str, str]] = []  # (caller text, label answered), in order
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.client_disconnects = 0
        self.disconnected = asyncio.Event()
        self._faults: list[Fault] = []
        self._closing = asyncio.Event()
        self._port = port
        self._runner: web.AppRunner | None = None

    def inject(self, kind: Fault, n: int = 1) -> None:
        """Make the next `n` chat requests fail the `kind` way."""
        self._faults.extend([kind] * n)

    @property
    def base_url(self) -> str:
        """The `base_url` for `openai.AsyncOpenAI`."""
        return f"http://127.0.0.1:{self._port}/v1"

    async def start(self) -> int:
        """Listen on 127.0.0.1; returns the port."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/moderations", self._moderations)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        await site.start()
        self._port = int(runner.addresses[0][1])
        self._runner = runner
        return self._port

    async def close(self) -> None:
        """Stop serving."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        self.requests.append((request.path, body))
        return body

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        err = {"error": {"message": message, "type": "server_error", "code": None}}
        return web.json_response(err, status=status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self._error(400, "messages must be a non-empty list")
        user = next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), "")
        answer = self.script.answer(str(user))
        fault = self._faults.pop(0) if self._faults else None
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and str(fmt.get("type", "")).startswith("json") and fault != "stall":
            system = next((str(m.get("content", "")) for m in msgs if m.get("role") == "system"), "")
            options = parse_options(system)
            if options:
                if fault == "http500":
                    return self._error(500, "stand-in fault injected")
                label = BAD_LABEL if fault == "bad_label" else self._choose(str(user), options)
                self.choices.append((str(user), label))
                await asyncio.sleep(self.choice_latency_s)
                return self._completion(body, json.dumps({"label": label}, ensure_ascii=False))
        if fault == "http500":
            return self._error(500, "stand-in fault injected")
        if fault == "stall":
            await self._closing.wait()  # answers nothing until the server closes
            return self._error(503, "stand-in closing")
        if fault == "unsafe_first":
            answer = f"{self.unsafe_text} {answer}"
        model = str(body.get("model", "standin"))
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = 1_700_000_000  # any timestamp will do; the stand-in reads no wall clock
        if not body.get("stream"):
            await asyncio.sleep(self.first_token_s)
            return self._completion(body, answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        tokens = _TOKEN.findall(answer)
        try:
            await asyncio.sleep(self.first_token_s)
            await resp.write(event({"role": "assistant", "content": ""}))
            for i, tok in enumerate(tokens):
                if i:
                    await asyncio.sleep(self.token_s)
                if fault == "drop" and i == max(1, len(tokens) // 2):
                    assert request.transport is not None
                    request.transport.abort()  # cut the TCP connection mid-answer
                    return resp
                await resp.write(event({"content": tok}))
            await resp.write(event({}, "stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            # The client closed the stream early (the answer was closed): that is the point.
            self.client_disconnects += 1
            self.disconnected.set()
        except asyncio.CancelledError:
            self.client_disconnects += 1
            self.disconnected.set()
            raise
        return resp

    @staticmethod
    def _completion(body: dict[str, Any], content: str) -> web.Response:
        """A whole (non-streamed) chat completion answering `content`."""
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": 1_700_000_000,  # any timestamp will do; the stand-in reads no wall clock
                "model": str(body.get("model", "standin")),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    def _choose(self, text: str, options: dict[str, list[str]]) -> str:
        return choose_label(text, options, script=self.script, min_similarity=self.choice_min_similarity)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self._error(400, "input must be a string or a list of strings")
        data = [
            {"object": "embedding", "index": i, "embedding": local_embedding(t, self.embedding_dim)}
            for i, t in enumerate(texts)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model", "standin-embedding")),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list):
            return self._error(400, "input must be a string or a list of strings")
        results = []
        for t in texts:
            flagged = any(w in str(t).lower() for w in self.flagged_words)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {"harassment": flagged},
                    "category_scores": {"harassment": 0.99 if flagged else 0.01},
                }
            )
        return web.json_response(
            {"id": f"modr-{uuid.uuid4().hex[:8]}", "model": str(body.get("model")), "results": results}
        )


async def _main() -> None:
    import argparse

    from testkit.standins.script import load_scripts

    ap = argparse.ArgumentParser(description="OpenAI-compatible stand-in (test/demo only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", help="JSON script file (see testkit/standins/script.py)")
    ap.add_argument("--first-token-s", type=float, default=0.3)
    ap.add_argument("--token-s", type=float, default=0.03)
    args = ap.parse_args()
    llm = load_scripts(args.script)[1] if args.script else LlmScript()
    server = OpenAIStandin(llm, port=args.port, first_token_s=args.first_token_s, token_s=args.token_s)
    port = await server.start()
    print(f"openai stand-in listening on http://127.0.0.1:{port}/v1", flush=True)
    await serve_until_signal(server.close)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
