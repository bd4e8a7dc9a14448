"""The `voicebridge` command line.

voicebridge serve [--config FILE] [--standins]  check, then run the bridge: ARI + AudioSocket + one Orchestrator per call
voicebridge chat MAP                       text mode: type the caller's words, the real dialogue answers
voicebridge dial NUMBER [--config FILE]    originate an outbound call into the Stasis app (AMI)
voicebridge campaign CONTACTS.csv --map MAP [--results FILE] [--config FILE]
                                           call every contact into the bot (paced, capped, retried)
voicebridge map lint MAP...                check dialogue maps; exit 1 on errors
voicebridge map schema [--write]           print (or write) dialogue_maps/schema.json
voicebridge cache warm MAP [--config FILE] synthesize every phrase the map needs into the cache
voicebridge demo [--text]                  a real call end to end through Asterisk (or text mode)
voicebridge --version

Every command's `--help` lists the settings it reads (generated from the settings models).
Exit status: 0 done, 1 a failure (a provider, a map with lint errors), 2 bad settings or a start
that cannot work (every problem on its own line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.domain.errors import ConfigError, VoicebridgeError

if TYPE_CHECKING:
    from pathlib import Path

    from bridge.campaign import Contact
    from bridge.settings import Settings

log = logging.getLogger("voicebridge")


# The settings each command reads (`Settings` fields; None: all), for its `--help`.
_SERVE = None
_DIAL = ("ari", "ami")
_WARM = ("redis", "providers", "yandex", "espeak")
_NONE: tuple[str, ...] = ()


def _version() -> str:
    try:
        return importlib.metadata.version("voicebridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: run `make install`)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voicebridge",
        description="Voice bot bridge for Asterisk (ARI + AudioSocket).",
        epilog="`voicebridge COMMAND --help` lists the settings each command reads.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"voicebridge {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_: str,
        settings: Sequence[str] | None,
    ) -> argparse.ArgumentParser:
        from bridge.settings_help import settings_epilog

        return parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=settings_epilog(settings),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command(
        sub,
        "serve",
        "check that the service can work, then run it; SIGTERM drains its calls, SIGINT stops at once",
        _SERVE,
    )
    serve.add_argument("--config", help="settings TOML file (env VOICEBRIDGE_* overrides it)")
    serve.add_argument(
        "--standins",
        action="store_true",
        help="use the local SpeechKit/OpenAI stand-ins (offline demo and tests, not the real services)",
    )

    chat = command(sub, "chat", "text mode: type the caller's words; the real dialogue answers", _NONE)
    chat.add_argument("map", help="the dialogue map (JSON), e.g. dialogue_maps/cleaning_quote.ru.json")

    dial = command(sub, "dial", "originate an outbound call into the Stasis app (AMI)", _DIAL)
    dial.add_argument("number")
    dial.add_argument("--config", help="settings TOML file (env VOICEBRIDGE_* overrides it)")
    dial.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")

    campaign = command(
        sub,
        "campaign",
        "call every contact of a CSV file into the bot: paced, capped, busy and no answer retried",
        _SERVE,
    )
    campaign.add_argument("contacts", help="CSV with a 'number' column; other columns are session variables")
    campaign.add_argument("--map", required=True, help="the dialogue map the contacts talk to")
    campaign.add_argument("--results", help="JSON lines, one per contact (default: CONTACTS.results.jsonl)")
    campaign.add_argument("--config", help="settings TOML file (env VOICEBRIDGE_* overrides it)")
    campaign.add_argument("--standins", action="store_true", help="the local SpeechKit/OpenAI stand-ins")

    mp = command(sub, "map", "dialogue map tools", _NONE)
    msub = mp.add_subparsers(dest="map_command", required=True)
    lint = command(msub, "lint", "check dialogue maps", _NONE)
    lint.add_argument("paths", nargs="+")
    schema = command(msub, "schema", "the JSON Schema of dialogue maps", _NONE)
    schema.add_argument("--write", action="store_true", help="write dialogue_maps/schema.json")

    cache = command(sub, "cache", "audio cache tools", _WARM)
    csub = cache.add_subparsers(dest="cache_command", required=True)
    warm = command(csub, "warm", "synthesize every phrase a map needs", _WARM)
    warm.add_argument("map")
    warm.add_argument("--config", help="settings TOML file (env VOICEBRIDGE_* overrides it)")
    warm.add_argument("--force", action="store_true", help="re-synthesize keys already cached")

    demo = command(sub, "demo", "a real call end to end (Asterisk + sipp), or --text", _NONE)
    demo.add_argument("--text", action="store_true", help="type the caller's words instead of a phone call")
    demo.add_argument("--map", default="dialogue_maps/cleaning_quote.ru.json")
    return p


def _testkit_missing(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{exc}: the stand-ins and the demo are test infrastructure, found only in a source "
        "checkout (run `make install` there); use real providers in production"
    )


def _run_serve(config: str | None, standins: bool, *, verbose: bool = False) -> int:
    from bridge.event_loop import loop_factory
    from bridge.settings import load_settings

    settings = load_settings(config)
    # The loop is chosen before it exists: `[service] event_loop` (asyncio or uvloop).
    with asyncio.Runner(loop_factory=loop_factory(settings.service.event_loop)) as runner:
        return runner.run(_serve(settings, standins, verbose=verbose))


async def _serve(settings: Settings, standins: bool, *, verbose: bool = False) -> int:
    from bridge.logs import configure_logging

    configure_logging(settings.log, secrets=settings.secret_values(), level="DEBUG" if verbose else None)
    log.info("event loop: %s", settings.service.event_loop)
    if standins:
        try:  # test infrastructure, imported only here (not in the product's wheel)
            from testkit.standins.launch import running_standins
        except ImportError as exc:
            raise _testkit_missing(exc) from exc

        async with running_standins(settings) as (patched, _, _):
            return await _serve_checked(patched)
    return await _serve_checked(settings)


async def _serve_checked(settings: Settings) -> int:
    from bridge.preflight import StartRefused, preflight

    problems = await preflight(settings)
    if problems:
        raise StartRefused(problems)
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


async def _campaign(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bridge.campaign import read_contacts
    from bridge.logs import configure_logging
    from bridge.settings import load_settings

    settings = load_settings(args.config).model_copy(update={"dialogue_map": args.map, "numbers": {}})
    configure_logging(settings.log, secrets=settings.secret_values(), level="DEBUG" if args.verbose else None)
    contacts = read_contacts(args.contacts)
    results = Path(args.results or f"{Path(args.contacts).with_suffix('')}.results.jsonl")
    if args.standins:
        try:
            from testkit.standins.launch import running_standins
        except ImportError as exc:
            raise _testkit_missing(exc) from exc

        async with running_standins(settings) as (patched, _, _):
            return await _campaign_with(patched, contacts, results)
    return await _campaign_with(settings, contacts, results)


async def _campaign_with(settings: Settings, contacts: list[Contact], results: Path) -> int:
    from bridge.app import VoicebridgeApp
    from bridge.campaign import AmiDial, Campaign
    from bridge.preflight import StartRefused, preflight
    from bridge.stop_signals import stop_signals

    problems = await preflight(settings)
    if problems:
        raise StartRefused(problems)
    app = VoicebridgeApp(settings)
    stop = asyncio.Event()
    c = settings.campaign
    dial = AmiDial(settings.ami, c, app, app=settings.ari.app, call_bound_s=c.call_bound_s)
    campaign = Campaign(contacts, c, dial, results)
    with stop_signals(app, stop):
        try:
            await app.start()
            assert app.ari is not None
            async with asyncio.timeout(settings.ari.timeout_s * 4):
                await app.ari.connected.wait()
            run = app.tasks.spawn(campaign.run(), "campaign")
            stopper = app.tasks.spawn(stop.wait(), "campaign-stop")
            await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                log.info("campaign stopped; run it again with the same results file to resume")
            else:
                run.result()  # a failure of the campaign itself: raised, not only logged
        finally:
            await app.close()
    outcomes: dict[str, int] = {}
    for record in campaign.results:
        outcomes[str(record["outcome"])] = outcomes.get(str(record["outcome"]), 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "nothing dialled"
    print(f"campaign: {summary}; {campaign.skipped} already done; results in {results}")
    return 0


async def _dial(number: str, config: str | None, timeout: float) -> int:
    from bridge.ami import originate
    from bridge.settings import load_settings

    s = load_settings(config)
    result = await originate(s.ami, number, app=s.ari.app, timeout_s=timeout)
    print(f"originated {number}: {result}")
    return 0


async def _cache_warm(map_path: str, config: str | None, force: bool) -> int:
    from bridge.providers import build_audio_cache, start_iam_provider, tts_for_warming
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


async def _chat(map_path: str) -> int:
    try:  # the text mode's fakes are test infrastructure, imported only here
        from testkit.demo import run_text_demo
    except ImportError as exc:
        raise _testkit_missing(exc) from exc
    return await run_text_demo(map_path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `voicebridge` console script."""
    args = _parser().parse_args(argv)
    from bridge.logs import LogSettings, configure_logging

    # Until the settings are read (`serve` then logs as its `[log]` section says).
    configure_logging(LogSettings(format="text"), level="DEBUG" if args.verbose else None)
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
        if args.command == "chat":
            return asyncio.run(_chat(args.map))
        if args.command == "serve":
            return _run_serve(args.config, args.standins, verbose=args.verbose)
        if args.command == "campaign":
            return asyncio.run(_campaign(args))
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
