"""Homes in other languages than English: a zh-CN home's typed commands are understood with
home-assistant-intents' Chinese sentences, executed, and answered in Chinese with the package's
response templates (spoken in Mandarin); a vi home likewise; a device of the home file may
speak another language than its home."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Recorder
from xiaozhi.payloads import Action, AudioClip, VoiceCommandEvent
from xiaozhi_hub.actions import Plan, plan
from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.home import (
    DeviceFunction,
    Entity,
    Floor,
    Home,
    HomeConfigError,
    VirtualBinding,
    parse_home,
)
from xiaozhi_hub.intents import IntentMatch
from xiaozhi_hub.languages import intent_language
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.resolve import Refusal, Resolution, ResolutionError, Scope
from xiaozhi_hub.responses import answers_for, own_sentence
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings, HubSettingsError, load_hub_settings
from xiaozhi_hub.speech_engines import speech_to_text
from xiaozhi_hub.spoken_answers import SpokenAnswers, encode_answer
from xiaozhi_speech import EspeakVoice, OpenAiSpeechToText, Speech, WyomingSpeechToText
from xiaozhi_speech.synthesis import MANDARIN_VOICE

ZH_HOME = """
areas:
  - {id: living_room, name: 客厅}
  - {id: bedroom, name: 卧室}
entities:
  - {entity_id: light.living_room, name: 客厅灯, area: living_room}
  - entity_id: light.bedroom
    name: 卧室灯
    area: bedroom
    binding: {type: virtual, state: {state: "on", brightness: 255}}
  - entity_id: light.study
    name: 书房灯
    binding: {type: mqtt, topic: zigbee2mqtt/study/set, payloads: {turn_on: {state: "ON"}}}
  - entity_id: lock.front_door
    name: 前门
    binding: {type: virtual, state: {state: unlocked}}
  - entity_id: climate.living_room
    name: 客厅空调
    area: living_room
    binding: {type: virtual, state: {state: heat, temperature: 22, current_temperature: 20}}
devices:
  - {id: speaker_1, name: 客厅音箱, area: living_room}
"""

VI_HOME = """
areas:
  - {id: living_room, name: phòng khách}
entities:
  - {entity_id: light.living_room, name: đèn phòng khách, area: living_room}
  - entity_id: lock.front_door
    name: cửa trước
    binding: {type: virtual, state: {state: unlocked}}
"""

MIXED_HOME = """
areas:
  - {id: living_room, name: Living Room, aliases: [客厅]}
entities:
  - {entity_id: light.living_room, name: living room light, aliases: [客厅灯], area: living_room}
devices:
  - {id: kid, name: Kid's speaker, area: living_room}
  - {id: nainai, name: Grandma's speaker, area: living_room, language: zh-cn}
"""


def virtual_states(home: Home) -> dict[str, dict[str, Any]]:
    """What the hub's virtual store starts with (HubService does the same)."""
    return {
        e.entity_id: dict(e.binding.state)
        for e in home.entities
        if isinstance(e.binding, VirtualBinding)
    }


async def plan_in(
    home_yaml: str,
    language: str,
    *texts: str,
    device_id: str | None = None,
    states: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Plan]:
    home = parse_home(yaml.safe_load(home_yaml))
    pipeline = VoicePipeline(
        Registry(home),
        language=language,
        states=virtual_states(home) if states is None else states,
    )
    await pipeline.start()
    try:
        return [await pipeline.plan_text(text, device_id=device_id) for text in texts]
    finally:
        pipeline.close()


def acted(result: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    return [(a.action, a.entity_id, dict(a.parameters)) for a in result.actions]


# -- zh-CN ----------------------------------------------------------------------------------


ZH_COMMANDS = [
    ("打开客厅灯", [("turn_on", "light.living_room", {})], "客厅灯已打开"),
    ("关闭客厅灯", [("turn_off", "light.living_room", {})], "客厅灯已关闭"),
    (
        "把客厅灯亮度调到百分之五十",
        [("turn_on", "light.living_room", {"brightness_pct": 50})],
        "客厅灯亮度已设置为50%",
    ),
    (  # our zh-CN sentence (hub/intents_xiaozhi_zh-CN.yaml): brightness without 亮度
        "把客厅灯调到百分之五十",
        [("turn_on", "light.living_room", {"brightness_pct": 50})],
        "客厅灯亮度已设置为50%",
    ),
    (
        "把客厅的灯调到百分之三十",
        [("turn_on", "light.living_room", {"brightness_pct": 30})],
        "客厅灯亮度已设置为30%",  # brightness_area
    ),
    (
        "把客厅灯亮度调到50%",
        [("turn_on", "light.living_room", {"brightness_pct": 50})],
        "客厅灯亮度已设置为50%",
    ),
    ("锁上前门", [("lock", "lock.front_door", {})], "前门已上锁"),
    ("打开客厅的灯", [("turn_on", "light.living_room", {})], "客厅灯已打开"),  # lights_area
    (
        "把客厅空调温度调到25度",
        [("set_temperature", "climate.living_room", {"temperature": 25})],
        "好的，已把温度调到25度",
    ),
]


@pytest.mark.parametrize(("text", "actions", "answer"), ZH_COMMANDS)
async def test_a_zh_cn_home_executes_typed_commands_and_answers_in_chinese(
    text: str, actions: list[tuple[str, str, dict[str, Any]]], answer: str
) -> None:
    [result] = await plan_in(ZH_HOME, "zh-cn", text)  # zh-cn is read as the package's zh-CN
    assert (result.intent is not None, result.executed, result.error) == (True, True, None)
    assert acted(result) == actions
    assert result.response_text == answer
    assert result.language == "zh-CN"


async def test_zh_cn_commands_from_a_device_act_in_its_room() -> None:
    """The speaking device's area is the context, as in English; its own volume is its own."""
    results = await plan_in(ZH_HOME, "zh-CN", "打开灯", "音量调到50", "静音", device_id="speaker_1")
    assert [acted(r) for r in results] == [
        [("turn_on", "light.living_room", {})],
        [("volume_set", "media_player.xiaozhi_speaker_1", {"volume_level": 0.5})],
        [("volume_set", "media_player.xiaozhi_speaker_1", {"volume_level": 0.0})],
    ]
    assert [r.response_text for r in results] == [
        "客厅灯已打开",
        "好的，已将音量调到50%",
        "好的，已静音",
    ]


async def test_zh_cn_questions_are_answered_from_the_state_and_never_guessed() -> None:
    results = await plan_in(
        ZH_HOME,
        "zh-CN",
        "客厅灯开着吗",  # off (a virtual light never turned on)
        "卧室灯开着吗",  # on
        "前门锁了吗",  # unlocked
        "客厅温度是多少",
        "书房灯开着吗",  # an mqtt light: its state is not read back
        "有灯开着吗",  # the bedroom light is on: yes, whatever the study light is
        "所有灯都关了吗",  # the bedroom light is on: no
        "哪些灯是开着的",  # the bedroom light, and the study light is unknown
        "有几个灯是开着的",
    )
    assert [r.actions for r in results] == [()] * 9
    assert [r.response_text for r in results] == [
        "不是，客厅灯现在关着",
        "是的",
        "不是，前门现在已解锁",
        "现在温度是20度",
        "抱歉，我不知道书房灯的状态",
        "是的",
        "不是",
        "卧室灯。抱歉，我不知道书房灯的状态",
        "1。抱歉，我不知道书房灯的状态",
    ]
    states = virtual_states(parse_home(yaml.safe_load(ZH_HOME)))
    states["light.bedroom"] = {"state": "off"}
    [none_known_on] = await plan_in(ZH_HOME, "zh-CN", "有灯开着吗", states=states)
    assert none_known_on.response_text == "抱歉，我不知道书房灯的状态"  # not "没有": unknown


async def test_zh_cn_refusals_are_said_in_chinese_and_nothing_is_executed() -> None:
    results = await plan_in(
        ZH_HOME,
        "zh-CN",
        "打开车库灯",
        "不要打开客厅灯",
        "今天天气怎么样",
        "把客厅空调温度调到99度",
        "打开灯",  # no device: no room
    )
    assert [(r.executed, r.error, r.actions) for r in results] == [
        (False, "unknown_area", ()),
        (False, "negated", ()),
        (False, "no_intent", ()),
        (False, "out_of_range", ()),
        (False, "no_area", ()),
    ]
    assert [r.response_text for r in results] == [
        "抱歉，找不到名为 车库灯 的区域",  # what Home Assistant answers
        "好的，我什么都不做",
        "抱歉，我无法理解您的意思，你可以尝试换个说法",
        "抱歉，客厅空调只能设置在7到35度之间",
        "抱歉，我不知道您说的是哪个房间",
    ]


def test_error_and_own_answers_of_a_language() -> None:
    zh = answers_for("zh-CN")
    assert zh.ha_error("no_entity", entity="车库灯") == "抱歉，找不到名为 车库灯 的设备"
    assert own_sentence("zh-CN", "offline", name="客厅灯") == "抱歉，客厅灯离线了"
    assert own_sentence("zh-HK", "not_heard") == "抱歉，我沒聽清楚"
    assert own_sentence("vi", "no_answer", name="đèn") == "Xin lỗi, đèn không phản hồi"
    assert own_sentence("de", "offline", name="Lampe") is None  # not translated: callers fall back
    assert own_sentence("zh-CN", "offline") is None  # a fact missing
    assert zh.ha_error("no_such_error") is None


# -- vi --------------------------------------------------------------------------------------


async def test_a_vi_home_executes_typed_commands_and_answers_in_vietnamese() -> None:
    results = await plan_in(
        VI_HOME, "vi", "bật đèn phòng khách", "tắt đèn phòng khách", "khóa cửa trước"
    )
    assert [acted(r) for r in results] == [
        [("turn_on", "light.living_room", {})],
        [("turn_off", "light.living_room", {})],
        [("lock", "lock.front_door", {})],
    ]
    assert [r.response_text for r in results] == [
        "đã bật đèn phòng khách",
        "đã thực hiện",
        "đã khóa",
    ]


# -- a device's own language -----------------------------------------------------------------


async def test_a_device_of_the_home_file_speaks_its_own_language() -> None:
    """Grandma's speaker is zh-CN in an English home: her commands are understood and
    answered in Chinese, the others' in English."""
    home = parse_home(yaml.safe_load(MIXED_HOME))
    assert home.device("nainai").language == "zh-CN"  # type: ignore[union-attr]
    pipeline = VoicePipeline(Registry(home), language="en", states={})
    await pipeline.start()
    try:
        assert pipeline.languages == ["en", "zh-CN"]  # both loaded at start
        assert (pipeline.language_of("nainai"), pipeline.language_of("kid")) == ("zh-CN", "en")
        hers = await pipeline.plan_text("打开客厅灯", device_id="nainai")
        his = await pipeline.plan_text("turn on the living room light", device_id="kid")
        not_his = await pipeline.plan_text("打开客厅灯", device_id="kid")
        typed = await pipeline.plan_text("关闭客厅灯", language="zh_CN")  # a test names one
    finally:
        pipeline.close()
    assert (acted(hers), hers.response_text, hers.language) == (
        [("turn_on", "light.living_room", {})],
        "客厅灯已打开",
        "zh-CN",
    )
    assert (acted(his), his.response_text) == (
        [("turn_on", "light.living_room", {})],
        "Turning on the living room light.",
    )
    assert (not_his.executed, not_his.error) == (False, "no_intent")
    assert typed.response_text == "客厅灯已关闭"


def test_languages_are_normalised_and_unknown_ones_refused() -> None:
    assert intent_language("zh-cn") == intent_language("zh_CN") == intent_language("zh") == "zh-CN"
    assert intent_language("en-US") == "en"
    assert intent_language("zh-Hant") == "zh-TW"
    assert intent_language("yue") == "zh-HK"
    with pytest.raises(ValueError, match="no intents for language 'xx'"):
        intent_language("xx")
    assert load_hub_settings(language="zh-cn").language == "zh-CN"
    with pytest.raises(HubSettingsError, match="no intents for language 'klingon'"):
        load_hub_settings(language="klingon")
    with pytest.raises(HomeConfigError, match=r"devices\[0\].language: no intents"):
        parse_home({"devices": [{"id": "d1", "name": "D", "language": "xx"}]})


async def test_remote_recognisers_are_asked_for_the_homes_language() -> None:
    """faster-whisper and OpenAI-compatible servers name Chinese zh: never zh-CN, never en."""
    for engine, url in (("wyoming", "tcp://127.0.0.1:10300"), ("openai", "http://127.0.0.1:9")):
        settings = load_hub_settings(language="zh-cn", stt_engine=engine, stt_url=url)
        recogniser = speech_to_text(settings)
        assert isinstance(recogniser, WyomingSpeechToText | OpenAiSpeechToText)
        assert recogniser.language == "zh"
        await recogniser.aclose()


# -- spoken in the answer's language ---------------------------------------------------------


class RecordingVoice:
    """espeak-ng, remembering which language and voice each sentence was spoken with."""

    def __init__(self) -> None:
        self.voice = EspeakVoice()
        self.spoken: list[tuple[str, str, str]] = []

    async def synthesize(self, text: str, *, language: str = "en") -> Speech:
        self.spoken.append((text, language, self.voice.voice_for(language)))
        return await self.voice.synthesize(text, language=language)


async def test_chinese_answers_are_spoken_with_the_mandarin_voice() -> None:
    voice = RecordingVoice()
    answers = SpokenAnswers(voice, language="zh-CN")
    clip = await answers.clip("客厅灯已打开")
    assert clip is not None
    assert clip.duration_ms > 500
    assert voice.spoken == [("客厅灯已打开", "zh-CN", MANDARIN_VOICE)]
    mandarin = await EspeakVoice().synthesize("客厅灯已打开", language="zh-CN")
    assert clip == encode_answer(mandarin)
    # A device's own language, when the caller names it; cached per language.
    assert await answers.clip("đã bật đèn", language="vi") is not None
    assert await answers.clip("客厅灯已打开") is clip
    assert voice.spoken[1:] == [("đã bật đèn", "vi", "vi")]


# -- through the hub ------------------------------------------------------------------------


@pytest.mark.integration  # a real Mosquitto
async def test_a_zh_cn_hub_answers_a_voice_command_in_spoken_mandarin(
    hub_settings: HubSettings, watcher: Recorder, tmp_path: Path
) -> None:
    config = tmp_path / "home.yaml"
    config.write_text(ZH_HOME, encoding="utf-8")
    settings = hub_settings.model_copy(
        update={"language": "zh-CN", "config": config, "tts_engine": "espeak"}
    )
    hub = HubService(settings)
    await hub.start()
    try:
        event = VoiceCommandEvent(
            device_id="speaker_1",
            command="打开客厅灯",
            confidence=0.9,
            language="zh-CN",
            message_id="vc-zh-1",
            transport="websocket",
        )
        await watcher.publish(hub.topics.voice_command_events(), event.to_wire())
        respond = await watcher.expect(
            hub.topics.command("speaker_1"),
            lambda m: m["command"] == "respond" and m.get("message_id") == "vc-zh-1",
            within=30,
        )
        assert respond["parameters"]["text"] == "客厅灯已打开"
        assert hub.states["light.living_room"]["state"] == "on"
        audio = AudioClip.model_validate(respond["parameters"]["audio"])
        mandarin = await EspeakVoice().synthesize("客厅灯已打开", language="zh-CN")
        assert audio == encode_answer(mandarin)
        assert base64.b64decode(audio.frames[0])
    finally:
        await hub.stop()


# -- every answer kind, planned directly ----------------------------------------------------

_ZH = parse_home(yaml.safe_load(ZH_HOME))
_LIGHT, _BEDROOM, _STUDY = (_ZH.entity(f"light.{n}") for n in ("living_room", "bedroom", "study"))
_FRONT = _ZH.entity("lock.front_door")
_BACK = Entity(entity_id="lock.back_door", name="后门", binding=VirtualBinding(state={}))
_FAN = Entity(entity_id="fan.living_room", name="客厅风扇", area="living_room")
_COVER = Entity(entity_id="cover.living_room", name="客厅窗帘", area="living_room")
_SPEAKER = _ZH.device_entity("speaker_1", DeviceFunction.SPEAKER)
_NO_READING = Entity(entity_id="climate.bedroom", name="卧室空调", area="bedroom")
_LIVING, _BEDROOM_AREA = _ZH.area("living_room"), _ZH.area("bedroom")
_UPSTAIRS = Floor(id="upstairs", name="二楼")


def _match(intent: str, slots: Any = None, texts: Any = None, **fields: Any) -> IntentMatch:
    fields.setdefault("language", "zh-CN")
    return IntentMatch(intent=intent, text="…", slots=slots or {}, slot_texts=texts or {}, **fields)


PLANNED = [
    # failures: home-assistant-intents' error answers, ours where it has none
    (
        _match("HassTurnOn", {"area": "living_room", "name": "台灯"}, {"area": "客厅"}),
        Resolution(error=ResolutionError.UNKNOWN_NAME, unknown="台灯"),
        "抱歉，在 客厅 区域没有找到名为 台灯 的设备",
    ),
    (
        _match("HassTurnOn", {"floor": "upstairs"}, {"floor": "二楼"}),
        Resolution(error=ResolutionError.UNKNOWN_NAME, unknown="台灯"),
        "抱歉，在 二楼 楼层没有找到名为 台灯 的设备",
    ),
    (
        _match("HassTurnOn"),
        Resolution(error=ResolutionError.UNKNOWN_FLOOR, unknown="三楼"),
        "抱歉，找不到名为 三楼 的楼层",
    ),
    (
        _match("HassTurnOn"),
        Resolution(error=ResolutionError.NO_TARGETS, domain="fan", area=_BEDROOM_AREA),
        "抱歉，在 卧室 区域没有找到 风扇 设备",
    ),
    (
        _match("HassTurnOn"),
        Resolution(error=ResolutionError.NO_TARGETS, domain="fan", floor=_UPSTAIRS),
        "抱歉，在 二楼 楼层没有找到 风扇 设备",
    ),
    (
        _match("HassTurnOn"),
        Resolution(error=ResolutionError.NO_TARGETS, domain="fan"),
        "抱歉，找不到名为 风扇 的设备类型",
    ),
    (
        _match("HassTurnOn"),
        Resolution(error=ResolutionError.AMBIGUOUS, domain="lock", candidates=(_FRONT, _BACK)),
        "有2个门锁：前门和后门。请说是哪一个",
    ),
    (
        _match("HassLightSet"),
        Resolution(error=ResolutionError.OUT_OF_RANGE, unknown="300"),
        "抱歉，300超出了范围",
    ),
    (
        _match("XiaozhiLedSet"),
        Resolution(error=ResolutionError.NO_DEVICE),
        "抱歉，我不知道是哪个设备在说话",
    ),
    (  # no sentence of ours in German: the package's "I didn't understand" (nothing done)
        _match("HassTurnOn", language="de"),
        Resolution(error=ResolutionError.NEGATED),
        "Entschuldigung, das habe ich nicht verstanden",
    ),
    (
        _match("HassTurnOn", language="vi"),
        Resolution(error=ResolutionError.AMBIGUOUS, domain="lock", candidates=(_FRONT, _BACK)),
        "Có 2 khóa: 前门 và 后门. Bạn muốn cái nào?",
    ),
    # the response key follows what was done
    (
        _match("HassTurnOn"),
        Resolution(targets=(_FRONT, _BACK), scope=Scope.ALL, domain="lock"),
        "所有门锁已上锁",
    ),
    (
        _match("HassTurnOn", {"name": "cover.living_room"}, {"name": "客厅窗帘"}),
        Resolution(targets=(_COVER,), scope=Scope.NAME, domain="cover"),
        "客厅窗帘已打开",
    ),
    (
        _match("HassTurnOff", {"area": "living_room", "domain": "fan"}, {"area": "客厅"}),
        Resolution(targets=(_FAN,), scope=Scope.AREA, domain="fan", area=_LIVING),
        "客厅风扇已关闭",
    ),
    (
        _match("HassTurnOn", {"floor": "upstairs", "domain": "light"}, {"floor": "二楼"}),
        Resolution(targets=(_LIGHT, _BEDROOM), scope=Scope.FLOOR, domain="light", floor=_UPSTAIRS),
        "二楼灯已打开",
    ),
    (  # no key of its own: the default, with every target's name
        _match("HassTurnOn"),
        Resolution(targets=(_LIGHT, _BEDROOM, _STUDY), scope=Scope.ALL),
        "书房灯、卧室灯和客厅灯已打开",
    ),
    (
        _match("HassLightSet", {"name": "light.living_room", "color": "red"}, {"name": "客厅灯"}),
        Resolution(targets=(_LIGHT,), scope=Scope.NAME, domain="light"),
        "颜色已设置",
    ),
    (
        _match("HassLightSet", {"area": "living_room", "color": "red"}, {"area": "客厅"}),
        Resolution(targets=(_LIGHT,), scope=Scope.AREA, domain="light", area=_LIVING),
        "客厅灯颜色已设置",
    ),
    (
        _match("HassLightSet", {"name": "light.living_room", "temperature": 3000}),
        Resolution(targets=(_LIGHT,), scope=Scope.NAME, domain="light"),
        "色温已设置",
    ),
    (  # turned on, no setting said: no template, our own "OK"
        _match("HassLightSet", {"name": "light.living_room"}),
        Resolution(targets=(_LIGHT,), scope=Scope.NAME, domain="light"),
        "好的",
    ),
    (
        _match("HassSetVolume", {"area": "living_room", "volume_level": 30}, {"area": "客厅"}),
        Resolution(targets=(_SPEAKER,), scope=Scope.AREA, domain="media_player", area=_LIVING),
        "好的，已将客厅音量调到30%",
    ),
    (
        _match("HassSetVolume", {"name": _SPEAKER.entity_id, "volume_level": 30}, {"name": "音箱"}),
        Resolution(targets=(_SPEAKER,), scope=Scope.NAME, domain="media_player"),
        "好的，已将音箱音量调到30%",
    ),
    # questions: never guessed
    (
        _match("HassClimateGetTemperature", {"area": "bedroom"}, {"area": "卧室"}),
        Resolution(targets=(_NO_READING,), scope=Scope.AREA, domain="climate", area=_BEDROOM_AREA),
        "抱歉，我不知道卧室的温度",  # not "现在温度是None度"
    ),
    (
        _match("HassGetState", {"name": "light.living_room"}, {"name": "客厅灯"}, response="one"),
        Resolution(targets=(_LIGHT,), scope=Scope.NAME, domain="light"),
        "客厅灯是关闭",
    ),
    (
        _match("HassGetState", {"name": "light.study"}, {"name": "书房灯"}, response="one"),
        Resolution(targets=(_STUDY,), scope=Scope.NAME, domain="light"),
        "抱歉，我不知道书房灯的状态",
    ),
    (
        _match("HassGetState", {"name": "light.study", "state": "on"}, {}, response="one_yesno"),
        Resolution(targets=(_STUDY,), scope=Scope.NAME, domain="light"),
        "抱歉，我不知道书房灯的状态",
    ),
    (
        _match("HassGetState", {"state": "on", "domain": "light"}, language="vi", response="which"),
        Resolution(targets=(_LIGHT, _BEDROOM, _STUDY), scope=Scope.ALL, domain="light"),
        "卧室灯. Xin lỗi, tôi không biết trạng thái của 书房灯",
    ),
]


@pytest.mark.parametrize(("match", "resolution", "answer"), PLANNED)
def test_each_kind_of_answer_in_another_language(
    match: IntentMatch, resolution: Resolution, answer: str
) -> None:
    result = plan(match, resolution, states=virtual_states(_ZH))
    assert result.response_text == answer
    assert result.language == match.language


def test_volume_already_at_its_limit_is_said_so() -> None:
    """ "Turned the volume up" would not be true: nothing was changed."""
    match = _match("HassSetVolumeRelative", {"volume_step": "up"})
    at_limit = {_SPEAKER.entity_id: {"state": "on", "volume_level": 1.0}}
    speaker = Resolution(targets=(_SPEAKER,), scope=Scope.DEVICE, domain="media_player")
    assert plan(match, speaker, states=at_limit).response_text == "音量已经是100%"
    assert plan(match, speaker, states={}).response_text == "好的，已调整音量"


def test_fallbacks_when_a_language_has_nothing_to_say() -> None:
    zh = answers_for("zh-CN")
    assert zh.refusal(Refusal(ResolutionError.NEGATED, "OK."), "OK.") == "好的，我什么都不做"
    assert zh.refusal(Refusal(ResolutionError.AMBIGUOUS, "…"), "…") == (
        "抱歉，我无法理解您的意思，你可以尝试换个说法"
    )
    german = _match("XiaozhiLedSet", language="de")  # ours, English only: no template
    led = Resolution(targets=(_LIGHT,), scope=Scope.DEVICE, domain="light")
    turned = [Action(action="turn_on", entity_id=_LIGHT.entity_id)]
    assert answers_for("de").answer(german, led, CurrentState(), turned, "Turning on the LED.") == (
        "Turning on the LED."
    )
    assert zh.answer(_match("XiaozhiLedSet"), led, CurrentState(), turned, "…") == "好的"
    assert zh.template("HassNoSuchIntent", ["default"], slots={}) is None
    assert zh.noun("vacuum") == "vacuum"


def test_a_template_that_fails_gives_no_answer_rather_than_a_wrong_one() -> None:
    zh = answers_for("zh-CN")
    assert zh._render("{{ 1 / 0 }}", {}) is None
    assert zh._render("{{ state.missing() }}", {"state": None}) is None
    assert zh._render("{{ slots.name }}", {"slots": {}}) is None  # nothing to say
