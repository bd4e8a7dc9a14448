"""`python -m bench` (`make bench`): the hot-path capacity sweep, per-frame micro costs, dialogue
latency and turn-taking on the labelled corpus, as plain-text tables; `--only soak` (`make soak`,
never by default): the soak with random faults. See bench/README.md for what each number means."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from bench.call_levels import realtime, run_figures
from bench.dialogue import render_dialogue, run_dialogue
from bench.eot_bench import render_eot, run_eot
from bench.figures_report import figures_json, render_figures
from bench.hotpath import DEFAULT_STEPS, capacity_json, profile_summary, run_capacity
from bench.micro import render_micro, run_micro
from bench.short_calls import run_short_calls
from bench.soak import run_soak
from bench.split_corpus import build_split_corpus
from bench.standin_figures import Standins, level_plans, run_standin_figures
from bench.standin_report import render_standins, standins_json
from bench.turn_bench import HELDOUT_CONFIGS, render_turns, run_turns, write_json
from bench.turn_corpus import build_corpus
from bench.virtual_figures import run_virtual_figures

PARTS = ("capacity", "micro", "dialogue", "turns", "eot", "figures", "standins", "soak")
DEFAULT_PARTS = (
    "capacity",
    "micro",
    "dialogue",
    "turns",
    "eot",
    "figures",
    "standins",
)  # the soak takes minutes: only when asked for


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (0 calls would run the stand-ins and then fail on an empty level)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1")
    return n


def _loaded_levels(text: str) -> list[int]:
    """argparse type: comma-separated call counts, each >= 2 (the 1-call level always runs)."""
    levels = [int(x) for x in text.split(",")]
    if any(n < 2 for n in levels):
        raise argparse.ArgumentTypeError(f"{text}: each level needs at least 2 calls (1 call always runs)")
    return levels


def _window_s(text: str) -> float:
    """argparse type: a finite window in s, >= 0 (a negative or NaN one would silently mean burst only)."""
    w = float(text)
    if not math.isfinite(w) or w < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number of seconds >= 0")
    return w


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and print their tables; 0 unless a benchmark could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(DEFAULT_STEPS),
        help="calls per capacity step, comma-separated (default %(default)s)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each measurement")
    parser.add_argument("--all-steps", action="store_true", help="do not stop at the first failing step")
    parser.add_argument(
        "--no-rt",
        action="store_true",
        help="no SCHED_FIFO for the capacity processes (nice only) and the figures",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile the bridge in each step into DIR and print the top",
    )
    parser.add_argument("--calls", type=int, default=20, help="scripted text-mode calls")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each capacity step (median and spread)"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the bridge's event loop"
    )
    parser.add_argument(
        "--bridge-vad",
        choices=("", "webrtc", "silero", "ten"),
        default="",
        help="capacity: the bridge's [vad] engine (default: the service's default)",
    )
    parser.add_argument(
        "--bridge-echo", choices=("on", "off"), default="on", help="capacity: the bridge's echo gate"
    )
    parser.add_argument(
        "--bridge-freeze-calls",
        choices=("on", "off"),
        default="off",
        help="capacity: the bridge's [gc] freeze_calls (each call frozen out of full collections)",
    )
    parser.add_argument(
        "--bridge-vad-batch",
        choices=("", "on", "off"),
        default="",
        help="capacity: the bridge's [vad] batch_across_calls (default: the service's default)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the capacity results with machine, Python, commit",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="soak: minutes")
    parser.add_argument("--soak-calls", type=int, default=6, help="soak: calls at a time")
    parser.add_argument("--seed", type=int, default=1, help="soak: seed of the fault schedule")
    parser.add_argument("--turn-items", type=int, default=125, help="corpus items per turn-taking category")
    parser.add_argument("--split-items", type=int, default=200, help="split answers in the end-of-turn part")
    parser.add_argument("--turn-seed", type=int, default=12, help="the turn corpus's seed")
    parser.add_argument(
        "--turn-json",
        type=Path,
        default=None,
        help="where the turn-taking results go (default bench/results/turns-seed<seed>-<items>.json)",
    )
    parser.add_argument(
        "--figure-calls",
        type=_loaded_levels,
        default=[50, 200],
        help="figures: concurrent calls of the loaded levels, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--single-calls", type=_positive_int, default=10, help="figures, stand-ins: one-at-a-time calls"
    )
    parser.add_argument(
        "--short-calls", type=int, default=10_000, help="figures: short sequential calls (memory)"
    )
    parser.add_argument(
        "--figure-callers",
        choices=("process", "inline"),
        default="process",
        help="figures, stand-ins: the fake callers in a process of their own on the other core, as "
        "Asterisk is (default), or in the bridge's process and loop (the old way, to compare)",
    )
    parser.add_argument(
        "--figures-json", type=Path, default=Path("bench-figures.json"), help="where the figures go"
    )
    parser.add_argument(
        "--standins-json",
        type=Path,
        default=Path("bench-figures-standins.json"),
        help="where the figures over the stand-ins go",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="stand-ins: before a level of many calls, wait (<= 10 min) for the 1-min load average to be <= this",
    )
    parser.add_argument(
        "--standins-calls",
        type=_loaded_levels,
        default=[200],
        help="stand-ins: concurrent calls of the loaded levels, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--turn-window",
        type=_window_s,
        default=8.0,
        help="stand-ins: spread the loaded levels' turns over this many s once all calls are live "
        "(0: burst only; default %(default)s); the largest level also runs as a burst (stress)",
    )
    parser.add_argument(
        "--turn-arrivals",
        choices=("even", "poisson"),
        default="even",
        help="stand-ins: turn times in the window, evenly spaced or Poisson (seeded exponential gaps)",
    )
    parser.add_argument(
        "--turn-seed-standins", type=int, default=1, help="stand-ins: seed of Poisson arrivals"
    )
    parser.add_argument(
        "--standins-sched",
        choices=("fifo", "default"),
        default="fifo",
        help="stand-ins: SCHED_FIFO like the bench's process (default; not with --no-rt), so it "
        "does not starve them as it would not starve remote services; or the default scheduling",
    )
    parser.add_argument(
        "--standins-stt",
        choices=("standin", "fake"),
        default="standin",
        help="stand-ins: the STT over gRPC (default) or the in-process fake (to see what gRPC STT costs)",
    )
    args = parser.parse_args(argv)
    parts = args.only or list(DEFAULT_PARTS)
    failed = False
    started = time.monotonic()
    if "capacity" in parts:
        _progress("capacity sweep ...")
        try:
            capacity = run_capacity(
                args.steps,
                duration_s=args.duration,
                warmup_s=args.warmup,
                stop_on_failure=not args.all_steps,
                realtime=not args.no_rt,
                profile_dir=args.profile,
                progress=_progress,
                repeat=args.repeat,
                event_loop=args.loop,
                vad_engine=args.bridge_vad,
                echo=args.bridge_echo == "on",
                vad_batch=args.bridge_vad_batch,
                freeze_calls=args.bridge_freeze_calls == "on",
            )
            print(capacity.render(), end="\n\n", flush=True)
            if args.json is not None:
                args.json.write_text(json.dumps(capacity_json(capacity, args.loop), indent=1) + "\n")
            if args.profile is not None:
                for step in capacity.steps:
                    print(profile_summary(args.profile / f"bridge-{step.calls}.prof"), end="\n\n")
        except (OSError, RuntimeError, TimeoutError) as exc:
            print(f"capacity sweep could not run: {exc}", end="\n\n", flush=True)
            failed = True
    if "micro" in parts:
        _progress("micro costs ...")
        print(render_micro(run_micro()), end="\n\n", flush=True)
    if "dialogue" in parts:
        _progress("dialogue latency ...")
        print(render_dialogue(run_dialogue(calls=args.calls)), end="\n\n", flush=True)
    if "figures" in parts:
        _progress(f"per-call figures (1, {args.figure_calls} calls; {args.short_calls} short calls) ...")
        load = os.getloadavg()[0]
        virtual = run_virtual_figures()
        with realtime(not args.no_rt) as scheduling:
            levels = run_figures(
                (1, *args.figure_calls),
                repeat_single=args.single_calls,
                callers=args.figure_callers,
                realtime=not args.no_rt,
            )
            short = run_short_calls(args.short_calls, progress=_progress) if args.short_calls else None
        print(render_figures(levels, short, virtual), end="\n\n", flush=True)
        data = figures_json(levels, short, virtual) | {
            "scheduling": scheduling,
            "figure_callers": args.figure_callers,
            "load_average_start": round(load, 2),
        }
        args.figures_json.write_text(json.dumps(data, indent=1) + "\n")
        _progress(f"figures written to {args.figures_json}")
    if "standins" in parts:
        plans = level_plans(
            (1, *args.standins_calls),
            window_s=args.turn_window,
            arrivals=args.turn_arrivals,
            seed=args.turn_seed_standins,
        )
        _progress(f"per-call figures over the stand-ins ({', '.join(p.label for p in plans)}) ...")
        standins_rt = args.standins_sched == "fifo" and not args.no_rt
        load = os.getloadavg()[0]
        with Standins(realtime=standins_rt) as standins, realtime(not args.no_rt) as scheduling:
            over = run_standin_figures(
                standins,
                plans,
                repeat_single=args.single_calls,
                max_load=args.max_load,
                real_stt=args.standins_stt == "standin",
                callers=args.figure_callers,
                realtime=not args.no_rt,
                progress=_progress,
            )
        print(render_standins(over), end="\n\n", flush=True)
        data = standins_json(over, scheduling, standins.scheduling) | {
            "figure_callers": args.figure_callers,
            "load_average_start": round(load, 2),
        }
        args.standins_json.write_text(json.dumps(data, indent=1) + "\n")
        _progress(f"figures over the stand-ins written to {args.standins_json}")
    if "soak" in parts:
        _progress("soak with random faults ...")
        result = run_soak(
            minutes=args.minutes, concurrent=args.soak_calls, seed=args.seed, progress=_progress
        )
        print(result.render(), end="\n\n", flush=True)
        summary = result.summary()
        failed = failed or bool(summary["failed_unexplained"] or summary["leftover_tasks"])
    if "turns" in parts:
        _progress(f"turn-taking corpus ({args.turn_items} items per category) ...")
        items = build_corpus(args.turn_items, seed=args.turn_seed)
        results = run_turns(items)
        print(render_turns(results, f"tuning, seed {args.turn_seed}"), end="\n\n", flush=True)
        # Held out: another seed, phrases, backchannel variants and voices the decision was not tuned on.
        held_seed = args.turn_seed + 1000
        held = run_turns(build_corpus(args.turn_items, seed=held_seed, heldout=True), HELDOUT_CONFIGS)
        print(render_turns(held, f"held out, seed {held_seed}"), end="\n\n", flush=True)
        # Held out again: phrases written blind after the backchannel list grew (seed + 2000).
        held2_seed = args.turn_seed + 2000
        held2 = run_turns(build_corpus(args.turn_items, seed=held2_seed, heldout=2), HELDOUT_CONFIGS)
        print(render_turns(held2, f"held out 2 (written blind), seed {held2_seed}"), end="\n\n", flush=True)
        # And a third, read only after the decision's last rules were committed (seed + 3000).
        held3_seed = args.turn_seed + 3000
        held3 = run_turns(build_corpus(args.turn_items, seed=held3_seed, heldout=3), HELDOUT_CONFIGS)
        print(render_turns(held3, f"held out 3 (written blind), seed {held3_seed}"), end="\n\n", flush=True)
        # Its phrases in six voices not looked at before (seed + 4000): the pause, blind.
        held4_seed = args.turn_seed + 4000
        held4 = run_turns(build_corpus(args.turn_items, seed=held4_seed, heldout=4), HELDOUT_CONFIGS)
        print(render_turns(held4, f"held out 4 (new voices), seed {held4_seed}"), end="\n\n", flush=True)
        turn_json = args.turn_json or Path(f"bench/results/turns-seed{args.turn_seed}-{args.turn_items}.json")
        write_json(
            turn_json,
            results,
            seed=args.turn_seed,
            per_category=args.turn_items,
            heldout=held,
            heldout_seed=held_seed,
            heldout2=held2,
            heldout2_seed=held2_seed,
            heldout3=held3,
            heldout3_seed=held3_seed,
            heldout4=held4,
            heldout4_seed=held4_seed,
        )
        _progress(f"turn-taking results written to {turn_json}")
    if "eot" in parts:
        _progress(
            f"end of turn on split utterances ({args.split_items} split, {args.split_items // 2} whole) ..."
        )
        split = build_split_corpus(args.split_items, args.split_items // 2, seed=args.turn_seed)
        print(render_eot(run_eot(split), f"seed {args.turn_seed}"), end="\n\n", flush=True)
        # Held out: another seed and other-state phrases the incompleteness check was not tuned on.
        heldout = build_split_corpus(
            args.split_items, args.split_items // 2, seed=args.turn_seed + 1000, heldout=True
        )
        print(render_eot(run_eot(heldout), f"held out, seed {args.turn_seed + 1000}"), end="\n\n", flush=True)
    print(f"benchmarks took {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
