"""``xiaozhi speech``: this home's offline recogniser as a Wyoming speech-to-text service.

Home Assistant (its "Wyoming Protocol" integration, then an Assist pipeline) or any Wyoming
client can then transcribe with the recogniser the hub uses: built from the home's own
sentences (``XIAOZHI_CONFIG``), offline, rejecting what the home cannot do. It needs no
broker. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from xiaozhi_hub.home import DEMO_HOME_PATH, HomeConfigError, load_home
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.settings import HubSettingsError, load_hub_settings
from xiaozhi_runtime.logs import configure_logging
from xiaozhi_runtime.runner import run_until_signal
from xiaozhi_speech import OfflineRecognizer
from xiaozhi_speech.wyoming import WyomingSttServer

__all__ = ["DEFAULT_WYOMING_PORT", "add_speech_parser", "serve_speech"]

DEFAULT_WYOMING_PORT = 10300
"""The port Home Assistant's Wyoming speech-to-text add-ons use."""


def _say(line: str) -> None:
    print(line, flush=True)


def add_speech_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``speech`` on the ``xiaozhi`` command's sub-parsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "speech",
        help="serve this home's offline recogniser over Wyoming (for Home Assistant's Assist)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_WYOMING_PORT, help="TCP port (default %(default)s)"
    )
    parser.add_argument("--config", help="home-model YAML (XIAOZHI_CONFIG)")
    parser.add_argument("--workers", type=int, help="decoding processes (XIAOZHI_SPEECH_WORKERS)")
    parser.set_defaults(func=_cmd_speech)
    return parser


async def serve_speech(
    host: str, port: int, *, config: str | None, workers: int, stop: asyncio.Event
) -> int:
    """Load the home, build the recogniser, serve it until ``stop``; the exit status."""
    settings = load_hub_settings(**({"config": config} if config else {}))
    home = load_home(settings.config or DEMO_HOME_PATH)
    pipeline = VoicePipeline(Registry(home), language=settings.language)
    recognizer = OfflineRecognizer(workers=workers, cache_dir=settings.speech_cache)
    try:
        await pipeline.start()
        model = await pipeline.load_recognizer(recognizer)
        server = WyomingSttServer(recognizer, host, port)
        bound = await server.start()
        home_name = settings.config or "the demo home"
        _say(
            f"speech    tcp://{host}:{bound} (Wyoming STT, {recognizer.language}, "
            f"{model.sentences} sentences of {home_name})"
        )
        try:
            await stop.wait()
        finally:
            _say("stopping")
            await server.stop()
    finally:
        pipeline.close()
        await recognizer.aclose()
    _say("stopped")
    return 0


def _cmd_speech(args: argparse.Namespace) -> int:
    try:
        settings = load_hub_settings(**({"config": args.config} if args.config else {}))
        configure_logging(level=settings.log_level)
        workers = args.workers or settings.speech_workers
        return run_until_signal(
            lambda stop: serve_speech(
                args.host, args.port, config=args.config, workers=workers, stop=stop
            )
        )
    except (HubSettingsError, HomeConfigError, ValueError, OSError) as err:
        print(f"xiaozhi speech: {err}", file=sys.stderr)
        return 2
