"""QA scenarios: a YAML file of steps, run against the real system, with a pass/fail report.

A scenario declares named devices and a list of steps; each step is a one-key mapping::

    name: MQTT device answers commands
    devices:
      kitchen: {transport: mqtt, groups: [downstairs]}
      lamp:    {transport: ws, binary_version: 3}
    steps:
      - connect: kitchen                        # boot + broker session / channel + hello
      - expect: {device: kitchen, what: status, match: {status: connected}, retained: true}
      - command: {group: downstairs, command: set_volume, parameters: {volume: 80}}
      - expect: {device: kitchen, what: event, match: {event_type: command_result, status: ok}}
      - say: {device: lamp, text: turn on the living room light}
      - expect: {device: lamp, what: response, match: {type: stt}, within: 5}
      - speak: {device: lamp, text: "turn on the kitchen light", voice: flite}
      - inject: {device: lamp, fault: truncated}
      - wait_for: {device: kitchen, connected: true, within: 15}
      - pause: 0.5
      - disconnect: kitchen

``expect`` looks at what happened **since the last action step** (connect, disconnect, say,
speak, command, inject) and waits up to ``within`` seconds (default 5). ``what`` says where:

=============  ============================================================================
status         the device's status topic (``retained: true``: what the broker holds, read
               by a fresh subscriber)
sensor         its sensor topic (``sensor_type``; any sensor when left out)
event          its events topic (command results, errors)
voice_command  a voice command: the fleet-wide topic or an MQTT device's own one (from this
               device when ``device`` is set)
command        a command the device received (MQTT) / one published on its topic (WS)
response       an answer the device received: ``stt``/``tts``/``llm``/``response`` (WS), a
               ``respond`` command (MQTT)
received       anything the device received
fault          the outcome of the device's last ``inject`` (``refused``, ``detail``)
error          something the device refused or suffered (protocol error, close, timeout)
=============  ============================================================================

``match`` is a subset of the JSON payload (nested mappings compared recursively; ``"*"``
matches any value of a present key). Exit codes: 0 every step passed, 1 a step failed,
2 the scenario file is invalid or the broker cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from xiaozhi.errors import ConfigurationError, OperationFailed, WireError
from xiaozhi.messages import ListenMode
from xiaozhi.payloads import DeviceKind
from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_sim.device import Fault, Received, SimError, SimulatedDevice
from xiaozhi_sim.fleet import DeviceSpec, build_device
from xiaozhi_sim.integrator import Integrator, Seen
from xiaozhi_sim.mic_and_speaker import AudioFormatError
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.report import Case
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats
from xiaozhi_sim.ws_device import WsDevice

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_PASSED",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "StepResult",
    "load_scenario",
    "run_scenario",
]

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

_WS_ONLY_FAULTS = frozenset({Fault.TRUNCATED, Fault.WRONG_VERSION, Fault.BAD_TOKEN})
_UDP_FAULTS = frozenset({Fault.BAD_KEY, Fault.REPLAYED_SEQUENCE, Fault.WRONG_SSRC})


class ScenarioError(ConfigurationError):
    """The scenario file is invalid; the message lists every problem with its step."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceDecl(_Strict):
    """One device of the scenario."""

    transport: Literal["ws", "mqtt", "mqtt-udp"] = "mqtt"
    binary_version: Literal[1, 2, 3] | None = None
    flavour: DeviceKind = DeviceKind.FIRMWARE
    mode: ListenMode | None = None
    groups: list[str] = Field(default_factory=list)
    device_id: str | None = None
    record: str | None = None  # write received TTS audio to this WAV


class What(enum.StrEnum):
    STATUS = "status"
    SENSOR = "sensor"
    EVENT = "event"
    VOICE_COMMAND = "voice_command"
    COMMAND = "command"
    RESPONSE = "response"
    RECEIVED = "received"
    FAULT = "fault"
    ERROR = "error"


class SayArgs(_Strict):
    device: str
    text: str


class SpeakArgs(_Strict):
    """Stream a WAV ``file``, or say ``text`` with a synthetic ``voice`` (espeak, flite)."""

    device: str
    file: str | None = None
    text: str | None = None
    voice: str = "espeak"

    @model_validator(mode="after")
    def _one_source(self) -> SpeakArgs:
        if (self.file is None) == (self.text is None):
            raise ValueError("speak needs exactly one of file or text")
        return self


class CommandArgs(_Strict):
    command: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    device: str | None = None
    group: str | None = None
    broadcast: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> CommandArgs:
        if sum((self.device is not None, self.group is not None, self.broadcast)) != 1:
            raise ValueError("give exactly one of device, group, broadcast: true")
        return self


class ExpectArgs(_Strict):
    what: What
    device: str | None = None
    match: dict[str, Any] = Field(default_factory=dict)
    within: float = Field(default=5.0, gt=0)
    retained: bool = False
    sensor_type: str | None = None

    @model_validator(mode="after")
    def _needs_device(self) -> ExpectArgs:
        if self.device is None and self.what is not What.VOICE_COMMAND:
            raise ValueError(f"'what: {self.what}' needs a device")
        if self.retained and self.what not in (What.STATUS, What.SENSOR):
            raise ValueError("'retained' applies to status and sensor only")
        return self


class WaitForArgs(_Strict):
    device: str
    state: DeviceState | None = None
    connected: bool | None = None
    within: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _something(self) -> WaitForArgs:
        if self.state is None and self.connected is None:
            raise ValueError("give a state or connected: true/false")
        return self


class InjectArgs(_Strict):
    device: str
    fault: Fault
    count: int | None = Field(default=None, ge=1)
    size: int | None = Field(default=None, ge=1)
    kind: Literal["binary", "text"] | None = None
    reconnect: bool | None = None
    wait: float | None = Field(default=None, gt=0)

    def options(self) -> dict[str, Any]:
        names = ("count", "size", "kind", "reconnect", "wait")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class ConnectArgs(_Strict):
    device: str
    within: float = Field(default=10.0, gt=0)


class Step(_Strict):
    """One step: exactly one of the fields is set."""

    connect: ConnectArgs | None = None
    disconnect: str | None = None
    say: SayArgs | None = None
    speak: SpeakArgs | None = None
    command: CommandArgs | None = None
    expect: ExpectArgs | None = None
    wait_for: WaitForArgs | None = None
    inject: InjectArgs | None = None
    pause: Annotated[float, Field(ge=0, le=600)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("connect"), str):
            return {**value, "connect": {"device": value["connect"]}}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        if len(self.model_fields_set) != 1:
            keys = ", ".join(type(self).model_fields)
            raise ValueError(f"a step has exactly one key, one of: {keys}")
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set))

    @property
    def is_action(self) -> bool:
        return self.kind in ("connect", "disconnect", "say", "speak", "command", "inject")

    def label(self) -> str:
        """A short human description for the report."""
        match self.kind:
            case "connect":
                assert self.connect is not None
                return f"connect {self.connect.device}"
            case "disconnect":
                return f"disconnect {self.disconnect}"
            case "say":
                assert self.say is not None
                return f"say {self.say.text!r} on {self.say.device}"
            case "speak":
                assert self.speak is not None
                said = self.speak.file or repr(self.speak.text)
                return f"speak {said} on {self.speak.device}"
            case "command":
                c = self.command
                assert c is not None
                target = c.device or (f"group {c.group}" if c.group else "broadcast")
                return f"command {c.command} {c.parameters or ''} to {target}".replace("  ", " ")
            case "expect":
                e = self.expect
                assert e is not None
                where = f" of {e.device}" if e.device else ""
                match = f" {e.match}" if e.match else ""
                kept = " (retained)" if e.retained else ""
                return f"expect {e.what}{where}{match}{kept} within {e.within:g} s"
            case "wait_for":
                w = self.wait_for
                assert w is not None
                cond = f"state {w.state}" if w.state else f"connected={w.connected}"
                return f"wait for {w.device} {cond} within {w.within:g} s"
            case "inject":
                assert self.inject is not None
                return f"inject {self.inject.fault} on {self.inject.device}"
            case _:
                return f"pause {self.pause:g} s"


class Scenario(_Strict):
    """A whole scenario file."""

    name: str = "scenario"
    description: str = ""
    devices: dict[str, DeviceDecl]
    steps: list[Step] = Field(min_length=1)
    path: Path | None = None


def _loc(err: ErrorDetails) -> str:
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        rest = ".".join(str(p) for p in loc[2:])
        return f"step {loc[1] + 1}" + (f" ({rest})" if rest else "")
    return ".".join(str(p) for p in loc) or "file"


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file.

    Raises:
        ScenarioError: unreadable, not YAML, or any invalid step; every problem is listed.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"{path}: {err}") from err
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping with 'devices' and 'steps'")
    problems = _check_references(raw)
    try:
        scenario = Scenario.model_validate({**raw, "path": path})
    except ValidationError as err:
        problems += [
            (_step_number(e), f"  {_loc(e)}: {e['msg'].removeprefix('Value error, ')}")
            for e in err.errors()
        ]
        scenario = None
    if problems or scenario is None:
        lines = [line for _, line in sorted(problems, key=lambda p: p[0])]
        raise ScenarioError(f"{path}: invalid scenario:\n" + "\n".join(lines))
    return scenario


def _step_number(err: ErrorDetails) -> int:
    loc = err["loc"]
    return int(loc[1]) + 1 if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) else 0


def _check_references(raw: dict[str, Any]) -> list[tuple[int, str]]:
    """Devices named by steps exist; faults exist on the device's transport.

    Runs on the raw file, so these problems are listed together with the schema's.
    """
    given_devices, given_steps = raw.get("devices"), raw.get("steps")
    devices: dict[str, Any] = given_devices if isinstance(given_devices, dict) else {}
    steps: list[Any] = given_steps if isinstance(given_steps, list) else []
    problems: list[tuple[int, str]] = []
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict) or len(step) != 1:
            continue
        args = next(iter(step.values()))
        name = (
            args
            if isinstance(args, str)
            else args.get("device")
            if isinstance(args, dict)
            else None
        )
        if not isinstance(name, str):
            continue
        if name not in devices:
            known = ", ".join(devices) or "none"
            problems.append(
                (number, f"  step {number}: unknown device {name!r} (declared: {known})")
            )
            continue
        decl = devices[name] if isinstance(devices[name], dict) else {}
        fault = args.get("fault") if isinstance(args, dict) and "inject" in step else None
        transport = decl.get("transport", "mqtt")
        udp = {str(f) for f in _UDP_FAULTS}
        if (transport == "mqtt-udp") != (fault in udp) and fault is not None:
            problems.append(
                (
                    number,
                    f"  step {number}: fault {fault} does not exist on {name!r} "
                    f"({transport}): bad_key, replayed_sequence and wrong_ssrc are the "
                    "mqtt-udp faults, and the only ones",
                )
            )
        elif transport == "mqtt" and fault in {str(f) for f in _WS_ONLY_FAULTS}:
            problems.append(
                (
                    number,
                    f"  step {number}: fault {fault} exists on WebSocket only, "
                    f"{name!r} is an MQTT device",
                )
            )
    return problems


def matches(payload: Any, pattern: Any) -> bool:
    """``pattern`` is a subset of ``payload`` (mappings recursively; ``"*"``: any value)."""
    if isinstance(pattern, dict):
        if not isinstance(payload, dict):
            return False
        return all(
            key in payload and matches(payload[key], value) for key, value in pattern.items()
        )
    if pattern == "*":
        return True
    return bool(payload == pattern)


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int
    label: str
    status: Literal["PASS", "FAIL", "SKIP"]
    seconds: float = 0.0
    detail: str = ""

    def line(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"  {self.status}  {self.number:>3}  {self.label}  ({self.seconds:.2f} s){detail}"


@dataclass(slots=True)
class ScenarioReport:
    name: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.status == "PASS" for s in self.steps)

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.passed else EXIT_FAILED

    def cases(self) -> list[Case]:
        """One report case per step, named ``step NN: label`` so CI lists them in order."""
        first_failure = next((s.number for s in self.steps if s.status == "FAIL"), None)
        width = len(str(len(self.steps)))
        return [
            Case(
                f"step {step.number:0{width}d}: {step.label}",
                step.status,
                step.seconds,
                step.detail
                if step.status != "SKIP"
                else f"not run: step {first_failure} failed (--keep-going runs the rest)",
            )
            for step in self.steps
        ]

    def summary(self) -> str:
        counts = {k: sum(1 for s in self.steps if s.status == k) for k in ("PASS", "FAIL", "SKIP")}
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"result    {verdict}: {counts['PASS']} passed, {counts['FAIL']} failed, "
            f"{counts['SKIP']} skipped"
        )


class _StepFailed(OperationFailed):
    """A step did not hold; the message is the report's detail."""


def _short(obj: Any, limit: int = 160) -> str:
    text = str(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ScenarioRunner:
    """Runs one :class:`Scenario` on the running loop.

    Args:
        scenario: what to run.
        settings: broker, WS and setup URLs.
        show: where report lines go as they happen.
        keep_going: run the remaining steps after a failure.
    """

    def __init__(
        self,
        scenario: Scenario,
        settings: SimSettings,
        *,
        show: Callable[[str], None] = print,
        keep_going: bool = False,
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.topics: TopicTree = settings.topics
        self.show = show
        self.keep_going = keep_going
        self.stats = SimStats()
        self.devices: dict[str, SimulatedDevice] = {}
        self.integrator: Integrator | None = None
        self._mark = 0.0

    async def run(self) -> ScenarioReport:
        """Run every step; never raises for a failing step (it is reported).

        Raises:
            SimError: the broker cannot be reached (for the integrator).
        """
        loop = asyncio.get_running_loop()
        report = ScenarioReport(self.scenario.name)
        where = f" ({self.scenario.path})" if self.scenario.path else ""
        self.show(f"scenario  {self.scenario.name}{where}")
        paho = PahoAsyncio()
        http = httpx.AsyncClient()
        try:
            self.integrator = Integrator(self.settings, paho)
            await self.integrator.start()
            for index, (name, decl) in enumerate(self.scenario.devices.items()):
                self.devices[name] = build_device(
                    DeviceSpec(
                        transport=decl.transport,
                        binary_version=decl.binary_version,
                        flavour=decl.flavour,
                        mode=decl.mode,
                        groups=tuple(decl.groups),
                        name=name,
                        device_id=decl.device_id,
                    ),
                    self.settings,
                    index=index,
                    stats=self.stats,
                    paho=paho,
                    http=http,
                    decode_audio=decl.record is not None,
                    record_path=Path(decl.record) if decl.record else None,
                )
            self._mark = loop.time()
            failed = False
            for number, step in enumerate(self.scenario.steps, 1):
                if failed and not self.keep_going:
                    result = StepResult(number, step.label(), "SKIP")
                else:
                    result = await self._run_step(number, step)
                    failed = failed or result.status == "FAIL"
                report.steps.append(result)
                self.show(result.line())
        finally:
            await asyncio.gather(*(d.stop() for d in self.devices.values()), return_exceptions=True)
            if self.integrator is not None:
                await self.integrator.stop()
            await paho.close()
            await http.aclose()
        self.show(report.summary())
        return report

    async def _run_step(self, number: int, step: Step) -> StepResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if step.is_action:
            self._mark = started
        try:
            await getattr(self, f"_step_{step.kind}")(getattr(step, step.kind))
        except _StepFailed as err:
            return StepResult(number, step.label(), "FAIL", loop.time() - started, str(err))
        except (SimError, WireError, AudioFormatError, OSError, ValueError) as err:
            detail = f"{type(err).__name__}: {err}"
            return StepResult(number, step.label(), "FAIL", loop.time() - started, detail)
        return StepResult(number, step.label(), "PASS", loop.time() - started)

    # -- actions ---------------------------------------------------------------------------

    async def _step_connect(self, args: ConnectArgs) -> None:
        device = self.devices[args.device]
        await device.start()
        if isinstance(device, WsDevice) and device.flavour is DeviceKind.FIRMWARE:
            await device.wake()
        if not await device.wait_connected(args.within):
            raise _StepFailed(f"not connected within {args.within:g} s (state {device.state})")

    async def _step_disconnect(self, name: str) -> None:
        await self.devices[name].stop()

    async def _step_say(self, args: SayArgs) -> None:
        await self.devices[args.device].say(args.text)

    async def _step_speak(self, args: SpeakArgs) -> None:
        if args.text is not None:
            await self.devices[args.device].say_aloud(args.text, voice=args.voice)
            return
        assert args.file is not None
        path = Path(args.file)
        if not path.is_absolute() and self.scenario.path is not None:
            path = self.scenario.path.parent / path
        await self.devices[args.device].speak(path)

    async def _step_command(self, args: CommandArgs) -> None:
        assert self.integrator is not None
        device_id = self.devices[args.device].device_id if args.device else None
        self.integrator.command(
            args.command,
            args.parameters,
            device_id=device_id,
            group=args.group,
            broadcast=args.broadcast,
        )

    async def _step_inject(self, args: InjectArgs) -> None:
        await self.devices[args.device].inject(args.fault, **args.options())

    async def _step_pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # a QA step ("let it run"), not synchronisation

    async def _step_wait_for(self, args: WaitForArgs) -> None:
        device = self.devices[args.device]

        def holds() -> bool:
            state_ok = args.state is None or device.state == args.state
            link_ok = args.connected is None or device.connected == args.connected
            return state_ok and link_ok

        if not await device.wait_until(holds, args.within):
            raise _StepFailed(
                f"after {args.within:g} s: state {device.state}, connected={device.connected}"
            )

    # -- expectations ------------------------------------------------------------------------

    async def _step_expect(self, args: ExpectArgs) -> None:
        device = self.devices[args.device] if args.device else None
        if args.what in (What.STATUS, What.SENSOR, What.EVENT, What.VOICE_COMMAND) or (
            args.what is What.COMMAND and not isinstance(device, MqttDevice)
        ):
            await self._expect_topic(args, device)
        else:
            assert device is not None
            await self._expect_inbox(args, device)

    def _topic_filter(
        self, args: ExpectArgs, device: SimulatedDevice | None
    ) -> Callable[[str], bool]:
        tree = self.topics
        if args.what is What.VOICE_COMMAND:
            # The fleet-wide topic (an edge, for its WebSocket devices) or a device's own one
            # (MQTT devices); `device` is matched on the payload's device_id either way.
            topic = tree.voice_command_events()
            return lambda t: t == topic or _kind_of(tree, t) is TopicKind.DEVICE_VOICE_COMMAND
        assert device is not None
        device_id = device.device_id
        if args.what is What.SENSOR and args.sensor_type is None:
            return lambda t: _is_kind(tree, t, TopicKind.SENSOR, device_id)
        topic = {
            What.STATUS: lambda: tree.status(device_id),
            What.SENSOR: lambda: tree.sensor(device_id, args.sensor_type or ""),
            What.EVENT: lambda: tree.device_events(device_id),
            What.COMMAND: lambda: tree.command(device_id),
        }[args.what]()
        return lambda t: t == topic

    async def _expect_topic(self, args: ExpectArgs, device: SimulatedDevice | None) -> None:
        integrator = self.integrator
        assert integrator is not None
        on_topic = self._topic_filter(args, device)
        pattern = dict(args.match)
        if args.what is What.VOICE_COMMAND and device is not None:
            pattern.setdefault("device_id", device.device_id)

        if args.retained:
            assert device is not None
            topic = (
                self.topics.status(device.device_id)
                if args.what is What.STATUS
                else self.topics.sensor(device.device_id, args.sensor_type or "temperature")
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + args.within
            last: Seen | None = None
            while True:
                last = await integrator.fetch_retained(topic, max(0.1, deadline - loop.time()))
                if last is not None and matches(last.obj, pattern):
                    return
                if loop.time() >= deadline:
                    break
                # The retained copy may be older than an update on its way: look again once
                # the live subscription saw the next publish on this topic.
                await integrator.wait_for(
                    lambda m: m.topic == topic and not m.retain,
                    since=loop.time(),
                    within=max(0.0, deadline - loop.time()),
                )
            held = _short(last.obj if last and last.obj else last.payload if last else None)
            raise _StepFailed(f"broker holds no retained match on {topic}; holds: {held}")

        def wanted(m: Seen) -> bool:
            return on_topic(m.topic) and not m.retain and matches(m.obj, pattern)

        hit = await integrator.wait_for(wanted, since=self._mark, within=args.within)
        if hit is None:
            seen = [m for m in integrator.messages if m.at >= self._mark and on_topic(m.topic)]
            last_seen = _short(seen[-1].obj or seen[-1].payload) if seen else "nothing"
            raise _StepFailed(f"no message matched {pattern or '{}'}; last seen: {last_seen}")

    async def _expect_inbox(self, args: ExpectArgs, device: SimulatedDevice) -> None:
        kinds: dict[What, Callable[[Received], bool]] = {
            What.COMMAND: lambda r: r.kind == "command",
            What.RESPONSE: lambda r: (
                (r.kind == "message" and r.payload.get("type") in ("stt", "tts", "llm", "response"))
                or (r.kind == "command" and r.payload.get("command") == "respond")
            ),
            What.RECEIVED: lambda r: r.kind in ("message", "command"),
            What.FAULT: lambda r: r.kind == "fault",
            What.ERROR: lambda r: r.kind == "error",
        }
        kind = kinds[args.what]

        def found() -> bool:
            return any(
                kind(r) and matches(r.payload, args.match)
                for r in device.inbox
                if r.at >= self._mark
            )

        if not await device.wait_until(found, args.within):
            seen = [r for r in device.inbox if r.at >= self._mark and kind(r)]
            last = _short(seen[-1].payload) if seen else "nothing"
            raise _StepFailed(f"no {args.what} matched {args.match or '{}'}; last seen: {last}")


def _kind_of(tree: TopicTree, topic: str) -> TopicKind | None:
    with contextlib.suppress(ValueError):
        return tree.parse(topic).kind
    return None


def _is_kind(tree: TopicTree, topic: str, kind: TopicKind, device_id: str) -> bool:
    with contextlib.suppress(ValueError):
        parsed = tree.parse(topic)
        return parsed.kind is kind and parsed.device_id == device_id
    return False


async def run_scenario(
    scenario: Scenario,
    settings: SimSettings,
    *,
    show: Callable[[str], None] = print,
    keep_going: bool = False,
) -> ScenarioReport:
    """Run ``scenario`` and return its report (see :class:`ScenarioRunner`)."""
    return await ScenarioRunner(scenario, settings, show=show, keep_going=keep_going).run()
