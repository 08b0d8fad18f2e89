"""Scale-out with real processes: a `xiaozhi hub` process and an in-process hub share the
voice commands on one broker through the shared subscription; each is handled exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import LineReader, Recorder
from xiaozhi.payloads import VoiceCommandEvent
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto


def _hub_process(settings: HubSettings, tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(
        XIAOZHI_MQTT_URL=settings.mqtt_url,
        XIAOZHI_HUB_HOST="127.0.0.1",
        XIAOZHI_HUB_PORT="0",  # it prints the port it bound
        XIAOZHI_HUB_ID=settings.hub_id + "-process",
        XIAOZHI_BASE_TOPIC=settings.base_topic,
        XIAOZHI_DISCOVERY_PREFIX=settings.discovery_prefix,
        XIAOZHI_HUB_SHARE_GROUP=settings.hub_share_group,
        XIAOZHI_API_KEYS="process-key",
        XIAOZHI_STATE_DIR=str(tmp_path / "process"),
        XIAOZHI_LOG_LEVEL="info",
        XIAOZHI_STT_ENGINE="none",  # nothing is spoken here: no recogniser to build
    )
    xiaozhi = str(Path(sys.executable).with_name("xiaozhi"))
    return subprocess.Popen(
        [xiaozhi, "hub"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


async def test_a_hub_process_and_a_hub_task_handle_each_voice_command_once(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder, tmp_path: Path
) -> None:
    process = _hub_process(hub_settings, tmp_path)
    reader = LineReader(process)
    local = HubService(hub_settings, home=engine.home, engine=engine)
    try:
        reader.wait_for("hub_online", timeout=60)
        # XIAOZHI_HUB_PORT=0: the process says which port it bound, and serves there
        url = reader.wait_for("hub       http://127.0.0.1:").split()[1]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/health")).status_code == 200
        await local.start()
        topics = local.topics
        devices = ["demo_living_room", "demo_kitchen", "demo_office"]
        sent = [f"proc-{i}" for i in range(30)]
        for i, message_id in enumerate(sent):
            event = VoiceCommandEvent(
                device_id=devices[i % 3],
                command="turn on the office light",
                confidence=1.0,
                language="en",
                message_id=message_id,
            )
            await watcher.publish(topics.voice_command_events(), event.to_wire())

        def responds() -> Counter[str]:
            return Counter(
                m["message_id"]
                for device in devices
                for m in watcher.json(topics.command(device))
                if m["command"] == "respond"
            )

        await watcher.wait_for(lambda: set(sent) <= set(responds()), within=30)
        # a last command per replica (round-robin), so a late duplicate would show
        for message_id in ("barrier-1", "barrier-2"):
            event = VoiceCommandEvent(
                device_id="demo_office",
                command="turn on the light",
                confidence=1.0,
                language="en",
                message_id=message_id,
            )
            await watcher.publish(topics.voice_command_events(), event.to_wire())
        await watcher.wait_for(lambda: {"barrier-1", "barrier-2"} <= set(responds()))
        counts = responds()
        assert all(counts[m] == 1 for m in sent), counts
        local_share = sum(
            s.value
            for metric in local.metrics.registry.collect()
            if metric.name == "xiaozhi_hub_voice_commands"
            for s in metric.samples
            if s.name.endswith("_total")
        )
        assert 0 < local_share < len(sent) + 2, "both the process and the task took a share"
    finally:
        await local.stop()
        process.terminate()
        assert process.wait(timeout=30) == 0
