"""The `voicebridge` command line.

voicebridge serve [--config FILE]          run the bridge: ARI + AudioSocket + one Orchestrator per call
voicebridge dial NUMBER [--config FILE]    originate an outbound call into the Stasis app (AMI)
voicebridge map lint MAP...                check dialogue maps; exit 1 on errors
voicebridge map schema [--write]           print (or write) dialogue_maps/schema.json
voicebridge cache warm MAP [--config FILE] synthesize every phrase the map needs into the cache
voicebridge demo [--text]                  a real call end to end through Asterisk (or text mode)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.domain.errors import ConfigError, VoicebridgeError

if TYPE_CHECKING:
    from bridge.settings import Settings

log = logging.getLogger("voicebridge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voicebridge", description="Voice bot bridge for Asterisk (ARI + AudioSocket)."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge; SIGTERM drains its calls, SIGINT stops at once")
    serve.add_argument("--config", help="settings TOML file (env VOICEBRIDGE_* overrides it)")
    serve.add_argument(
        "--standins",
        action="store_true",
        help="use the local SpeechKit/OpenAI stand-ins (offline demo and tests, not the real services)",
    )

    dial = sub.add_parser("dial", help="originate an outbound call into the Stasis app (AMI)")
    dial.add_argument("number")
    dial.add_argument("--config")
    dial.add_argument("--timeout", type=float, default=30.0)

    mp = sub.add_parser("map", help="dialogue map tools")
    msub = mp.add_subparsers(dest="map_command", required=True)
    lint = msub.add_parser("lint", help="check dialogue maps")
    lint.add_argument("paths", nargs="+")
    schema = msub.add_parser("schema", help="the JSON Schema of dialogue maps")
    schema.add_argument("--write", action="store_true", help="write dialogue_maps/schema.json")

    cache = sub.add_parser("cache", help="audio cache tools")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    warm = csub.add_parser("warm", help="synthesize every phrase a map needs")
    warm.add_argument("map")
    warm.add_argument("--config")
    warm.add_argument("--force", action="store_true", help="re-synthesize keys already cached")

    demo = sub.add_parser("demo", help="a real call end to end (Asterisk + sipp), or --text")
    demo.add_argument("--text", action="store_true", help="type the caller's words instead of a phone call")
    demo.add_argument("--map", default="dialogue_maps/cleaning_quote.ru.json")
    return p


def _testkit_missing(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{exc}: the stand-ins and the demo are test infrastructure, found only in a source "
        "checkout (run `make install` there); use real providers in production"
    )


async def _serve(config: str | None, standins: bool) -> int:
    from bridge.settings import load_settings

    settings = load_settings(config)
    if standins:
        try:  # test infrastructure, imported only here (not in the product's wheel)
            from testkit.standins.launch import running_standins
        except ImportError as exc:
            raise _testkit_missing(exc) from exc

        async with running_standins(settings) as (patched, _, _):
            return await _serve_with(patched)
    return await _serve_with(settings)


async def _serve_with(settings: Settings) -> int:
    from bridge.app import VoicebridgeApp
    from bridge.stop_signals import stop_signals

    app = VoicebridgeApp(settings)
    stop = asyncio.Event()
    # SIGTERM drains (calls in progress finish), SIGINT or a second SIGTERM stops at once; exit 0.
    with stop_signals(app, stop):
        try:
            await app.start()
            log.info("voicebridge serving; SIGTERM drains, Ctrl-C stops")
            await app.run_until(stop)
        finally:
            await app.close()
    return 0


async def _dial(number: str, config: str | None, timeout: float) -> int:
    from bridge.ami import originate
    from bridge.settings import load_settings

    s = load_settings(config)
    result = await originate(s.ami, number, app=s.ari.app, timeout_s=timeout)
    print(f"originated {number}: {result}")
    return 0


async def _cache_warm(map_path: str, config: str | None, force: bool) -> int:
    from bridge.composition import build_audio_cache, start_iam_provider, tts_for_warming
    from bridge.settings import load_settings
    from orchestrator.cache.warm import warm_cache
    from orchestrator.clock import LoopClock
    from orchestrator.dialogue_map.loader import load_dialogue_map

    s = load_settings(config)
    dmap = load_dialogue_map(map_path)
    cache = build_audio_cache(s)
    iam = await start_iam_provider(s.yandex, LoopClock())
    try:
        async with tts_for_warming(s, iam_token=iam.token if iam is not None else None) as tts:
            report = await warm_cache(dmap, tts, cache, force=force)
    finally:
        if iam is not None:
            await iam.aclose()
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `voicebridge` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymorphy3").setLevel(logging.WARNING)  # dictionary-loading chatter
    try:
        if args.command == "map":
            if args.map_command == "lint":
                from orchestrator.dialogue_map.lint import run_map_lint
                from orchestrator.intents.confusion import confusion_issues

                # The intents layer's check (examples the classifier confuses) is passed in: the
                # map layer sits below intents and cannot import it.
                return max(run_map_lint(p, checks=[confusion_issues]) for p in args.paths)
            from orchestrator.dialogue_map.schema import schema_text, write_schema

            if args.write:
                print(f"wrote {write_schema()}")
            else:
                sys.stdout.write(schema_text())
            return 0
        if args.command == "serve":
            return asyncio.run(_serve(args.config, args.standins))
        if args.command == "dial":
            return asyncio.run(_dial(args.number, args.config, args.timeout))
        if args.command == "cache":
            return asyncio.run(_cache_warm(args.map, args.config, args.force))
        if args.command == "demo":
            try:  # demo infrastructure, imported only here
                from testkit.demo import run_demo
            except ImportError as exc:
                raise _testkit_missing(exc) from exc
            return asyncio.run(run_demo(text=args.text, map_path=args.map))
    except ConfigError as exc:
        print(f"voicebridge: {exc}", file=sys.stderr)
        return 2
    except VoicebridgeError as exc:
        print(f"voicebridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
