"""Settings of the hub (`xiaozhi hub`): one pydantic-settings class, prefix ``XIAOZHI_``.

The shared names (``XIAOZHI_MQTT_URL``, ``XIAOZHI_HUB_PORT``, ``XIAOZHI_CONFIG``,
``XIAOZHI_SECRET``, ``XIAOZHI_STATE_DIR``, ``XIAOZHI_BASE_TOPIC``) are the stable ones of
design.md section 3. Settings are passed in explicitly, never read from a global;
:func:`load_hub_settings` reports *every* invalid field at once, quoting the value it got.

Secrets, and where they come from when unset:

* ``XIAOZHI_DEVICE_TOKEN_KEY`` is the Ed25519 private key that signs device tokens (the OTA
  endpoint issues them). Unset: :func:`resolve_device_token_key` generates one on first run
  into ``<XIAOZHI_STATE_DIR>/device_token_key`` (mode 0600) and writes its public half beside
  it, ``device_token_key.pub``: that public key is all an edge gets (``XIAOZHI_DEVICE_TOKEN_
  PUBLIC_KEY``), so an edge verifies tokens and cannot mint one. Hub replicas share the key.
* ``XIAOZHI_SECRET`` is the hub's alone: the REST API's JWT key is derived from it. Unset:
  :func:`resolve_secret` generates one into ``<XIAOZHI_STATE_DIR>/secret`` (mode 0600).
  Edges no longer need it.
* ``XIAOZHI_JWT_SECRET`` signs the REST API's JWTs. Unset: derived from the secret above
  (HMAC-SHA256 with a fixed label), so replicas sharing the secret accept each other's JWTs.
* ``XIAOZHI_API_KEYS``: comma-separated keys, each optionally suffixed with ``:read`` for a
  read-only key (``XIAOZHI_API_KEYS=ops-key,dash-key:read``). A key without a suffix may also
  send commands. Empty: the REST API accepts no credentials at all (a warning is logged).
* Home Assistant tokens are never settings nor written in the home file: a ``homeassistant``
  binding names the environment variable holding its long-lived token (``token_env``).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xiaozhi.config import MqttUrlSetting, describe_invalid_settings
from xiaozhi.errors import ConfigurationError
from xiaozhi.tokens import Ed25519PrivateKey, private_key_from_text, public_key_text
from xiaozhi.topics import TopicTree, validate_id
from xiaozhi_hub.activations import DeviceApproval
from xiaozhi_hub.languages import intent_language
from xiaozhi_runtime.secrets_file import read_or_create_secret
from xiaozhi_runtime.tls import (
    MqttTlsSettings,
    machine_names,
    self_signed_certificate,
    server_tls_context,
)

__all__ = [
    "ApiRole",
    "HubCertificate",
    "HubSettings",
    "HubSettingsError",
    "SpeechToTextEngine",
    "TextToSpeechEngine",
    "default_hub_id",
    "derive_jwt_secret",
    "host_port",
    "load_hub_settings",
    "parse_api_keys",
    "parse_hmac_keys",
    "resolve_device_token_key",
    "resolve_hub_tls",
    "resolve_secret",
]

SECRET_FILE_NAME = "secret"
DEVICE_TOKEN_KEY_FILE_NAME = "device_token_key"
DEVICE_TOKEN_PUBLIC_KEY_FILE_NAME = "device_token_key.pub"  # what edges read
_SECRET_BYTES = 32
_JWT_LABEL = b"xiaozhi-hub jwt v1"


def host_port(url: str) -> tuple[str, int]:
    """``tcp://host:port`` (a Wyoming service's address) as ``(host, port)``.

    Raises:
        ValueError: another scheme, or no host or port.
    """
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise ValueError(f"expected tcp://host:port, got {url!r}")
    return parts.hostname, parts.port


class HubSettingsError(ConfigurationError):
    """One or more settings are invalid; the message lists every one of them."""


class ApiRole(enum.StrEnum):
    """What a REST API credential may do."""

    READ = "read"  # GET endpoints and the voice test (which executes nothing)
    WRITE = "write"  # everything: device, group and broadcast commands too


def default_hub_id() -> str:
    """A client id unique per replica: ``hub-<host>-<pid>`` in the id grammar.

    Two processes with the same MQTT client id kick each other off the broker
    (reference/home-automation.md §6.10), so replicas never share one by default.
    """
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:32]
    return f"hub-{host.strip('-') or 'host'}-{os.getpid()}"


def parse_api_keys(raw: str) -> dict[str, ApiRole]:
    """``"k1,k2:read"`` → ``{"k1": WRITE, "k2": READ}``.

    Raises:
        ValueError: an empty entry's role, or a role that is not ``read``/``write``.
    """
    keys: dict[str, ApiRole] = {}
    for item in raw.split(","):
        entry = item.strip()
        if not entry:
            continue
        key, sep, role = entry.rpartition(":")
        if not sep:
            key, role = entry, ApiRole.WRITE.value
        if not key:
            raise ValueError(f"API key entry {entry!r} has no key before ':'")
        try:
            keys[key] = ApiRole(role)
        except ValueError:
            raise ValueError(
                f"API key entry ending in {':' + role!r}: unknown role (use ':read' or ':write')"
            ) from None
    return keys


class SpeechToTextEngine(enum.StrEnum):
    """Where the hub's speech recognition runs (docs/speech.md)."""

    OFFLINE = "offline"  # pocketsphinx with this home's language model, in-process pool
    WYOMING = "wyoming"  # a Wyoming STT service (faster-whisper, speech-to-phrase...): stt_url
    OPENAI = "openai"  # an OpenAI-compatible /v1/audio/transcriptions endpoint: stt_url
    NONE = "none"  # this hub does not transcribe (another replica or worker does)


class TextToSpeechEngine(enum.StrEnum):
    """How the hub's answers are spoken (docs/speech.md)."""

    ESPEAK = "espeak"  # espeak-ng (Debian package), every language it has
    FLITE = "flite"  # flite's US English voices (Debian package)
    WYOMING = "wyoming"  # a Wyoming TTS service (piper...): tts_url
    NONE = "none"  # answers go as text; the edge plays a chime


class HubSettings(BaseSettings, MqttTlsSettings):
    """Everything the hub needs: broker, HTTP, home model, secrets, topics."""

    model_config = SettingsConfigDict(env_prefix="XIAOZHI_", extra="ignore")

    mqtt_url: MqttUrlSetting = Field(
        default="mqtt://127.0.0.1:1883",
        description="The broker: mqtt://[user:password@]host:port, or mqtts:// (TLS, 8883).",
    )
    hub_host: str = Field(default="0.0.0.0", description="HTTP listen address.")
    hub_port: int = Field(default=8003, ge=0, le=65535, description="HTTP port (0: any free).")
    hub_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain: the HTTP port serves https (the dashboard then "
        "is a secure context on a LAN address), with XIAOZHI_HUB_TLS_KEY_FILE",
    )
    hub_tls_key_file: Path | None = Field(
        default=None, description="the private key of XIAOZHI_HUB_TLS_CERT_FILE"
    )
    hub_tls_self_signed: bool = Field(
        default=False,
        description="serve https with a self-signed certificate made into <state_dir> "
        "(hub-tls-cert.pem) for localhost, this machine's names and LAN addresses, kept "
        "from one start to the next",
    )
    config: Path | None = Field(
        default=None, description="The home-model YAML. Unset: the shipped demo home."
    )
    demo_bindings: bool = Field(
        default=True,
        description="With the shipped demo home (XIAOZHI_CONFIG unset), let its bindings "
        "reach real topics (its kitchen light is a zigbee2mqtt bulb). False: every demo "
        "entity is virtual, so a demo on a real installation's broker touches nothing real "
        "(`xiaozhi up` sets it so with XIAOZHI_MQTT_URL).",
    )
    state_dir: Path = Field(
        default=Path("var"), description="Runtime state: the generated secret lives here."
    )
    secret: SecretStr | None = Field(
        default=None,
        description="The hub's own secret (REST JWTs derive from it). Unset: generated on "
        "first run into <state_dir>/secret.",
    )
    device_token_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (base64url, 43 chars) signing device tokens. Unset: "
        "generated on first run into <state_dir>/device_token_key, public half beside it.",
    )
    device_token_public_key_file: Path | None = Field(
        default=None,
        description="Where the hub writes the device token public key for edges. Unset: "
        "<state_dir>/device_token_key.pub.",
    )
    device_approval: DeviceApproval = Field(
        default=DeviceApproval.MANUAL,
        description="manual: an operator approves each new device's activation code; auto: "
        "every device is approved at its first setup call (labs; logged as a warning).",
    )
    activation_ttl_seconds: int = Field(
        default=3600, ge=60, description="How long an activation code waits for approval."
    )
    max_pending_activations: int = Field(
        default=1000, ge=1, description="Pending activations kept at most (a flood is refused)."
    )
    activation_hmac_keys: SecretStr | None = Field(
        default=None,
        description="serial=hexkey,... : eFuse HMAC keys of boards whose activation HMAC the "
        "hub checks (a wrong HMAC is refused; a right one is shown, never approves).",
    )
    base_topic: str = Field(default="xiaozhi", description="First level(s) of the topic tree.")
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's MQTT discovery prefix."
    )
    discovery_enabled: bool = Field(default=True, description="Publish HA MQTT discovery.")
    discover_simulated: bool = Field(
        default=False,
        description="Also publish HA MQTT discovery for devices marked simulated (the "
        "simulator's, `xiaozhi up`'s demo devices); off: a simulated fleet stays out of HA.",
    )
    discovery_scan_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for the retained discovery configs at start (normally ms).",
    )
    device_expire_after_seconds: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="Forget a learnt device (one the home file does not list) that is "
        "disconnected and has not been heard from for this long: its registry entry, Home "
        "Assistant discovery and retained status and sensors go. 0: never.",
    )
    snapshot_min_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Shortest time between two bridge/devices (and group/fleet) snapshots: "
        "a fleet reconnecting at once produces one, not thousands.",
    )
    snapshot_max_devices: int = Field(
        default=2000,
        ge=1,
        description="Most devices listed in the retained bridge/devices snapshot (home-file "
        "devices first, then connected, then the most recently seen); bridge/info counts all "
        "and /api/v1/devices lists all.",
    )
    stream_queue_limit: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Live stream (/api/v1/stream): most messages waiting for one slow client; "
        "past it the oldest is dropped, counted, and the client told.",
    )
    stream_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Live stream: a HEARTBEAT goes to a client after this long without a frame.",
    )
    stream_ack_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Live stream: how long a frame sent with ACK_REQUIRED waits for its ack "
        "before it is sent again (twice), then the connection is closed.",
    )
    sign_in_seconds: float = Field(
        default=10.0,
        gt=0,
        description="WebSockets (/api/v1/stream, /api/v1/devices/{id}/listen): how long a "
        "client has to sign in (and, on the stream, agree a version) before it is closed "
        "(1008; the stream says ERROR 0x202 first).",
    )
    stream_max_signing_in: int = Field(
        default=64,
        ge=1,
        description="Live stream: most connections open without credentials yet (those that "
        "sign in in their VERSION_CHECK, as browsers do); more are refused at once with ERROR "
        "0x204 and close code 1013 (try again later). Credentials on the upgrade request "
        "(X-API-Key, Bearer) are not counted.",
    )
    hub_id: str = Field(
        default_factory=default_hub_id,
        description="MQTT client id of this replica; unique per process.",
    )
    hub_share_group: str = Field(
        default="hub",
        description="Shared-subscription group of the hub replicas ($share/<group>/...).",
    )
    api_keys: str = Field(
        default="", description="REST API keys, comma-separated; suffix ':read' = read-only."
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key of REST JWTs. Unset: derived from the secret."
    )
    jwt_ttl_seconds: int = Field(default=3600, ge=60, description="Lifetime of issued JWTs.")
    jwt_issuer: str = Field(default="xiaozhi-hub", description="JWT 'iss' issued and required.")
    ha_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one Home Assistant REST call."
    )
    edge_public_url: str | None = Field(
        default=None,
        description="Device WebSocket URL the OTA endpoint hands out. "
        "Unset: ws://<host the device used>:<edge_port>/xiaozhi/v1/.",
    )
    edge_port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="The edge's port (0: an edge on a free port; `xiaozhi up` sets the real one).",
    )
    device_transport: Literal["websocket", "mqtt-udp"] = Field(
        default="websocket",
        description="What the OTA endpoint tells approved firmware to use, unless the home "
        "model's device says otherwise: the edge's WebSocket, or MQTT + UDP (the `mqtt` "
        "block; the edge needs XIAOZHI_DEVICE_MQTT_PORT).",
    )
    edge_mqtt_endpoint: str | None = Field(
        default=None,
        description="`host:port` of the edge's firmware MQTT listener in the `mqtt` block. "
        "Unset: <host the device used>:<edge_mqtt_port>.",
    )
    edge_mqtt_port: int = Field(
        default=1884, ge=1, le=65535, description="The edge's XIAOZHI_DEVICE_MQTT_PORT."
    )
    device_binary_version: int = Field(
        default=1, ge=1, le=3, description="Binary protocol version the OTA endpoint assigns."
    )
    language: str = Field(
        default="en",
        description="The home's language: intents, answers and their voice (a "
        "home-assistant-intents code; zh-cn and en-US are read as zh-CN and en).",
    )
    command_answer_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a voice command waits for a device's command_result before "
        "answering that the device did not respond; also how long the hub waits for the "
        "answer to any command for an absent device before publishing a failed "
        "command_result for it (docs/operations.md section 9).",
    )
    max_concurrent_voice_commands: int = Field(
        default=64, ge=1, description="Voice commands processed at once per replica."
    )
    stt_engine: SpeechToTextEngine = Field(
        default=SpeechToTextEngine.OFFLINE,
        description="Speech recognition: offline, wyoming, openai or none.",
    )
    stt_url: str | None = Field(
        default=None,
        description="The STT service: tcp://host:port (wyoming) or a base URL (openai).",
    )
    stt_model: str = Field(default="whisper-1", description="Model name sent to an openai STT.")
    stt_api_key: SecretStr | None = Field(default=None, description="Bearer key of an openai STT.")
    speech_workers: int = Field(
        default=1, ge=1, le=16, description="Processes decoding speech (offline engine)."
    )
    speech_cache_dir: Path | None = Field(
        default=None,
        description="Where the offline recogniser keeps the models it built, by home and "
        "intents (a restart reads them instead of building again, ~30 s). Unset: "
        "<state_dir>/speech-cache.",
    )
    speech_share_group: str = Field(
        default="speech",
        description="Shared-subscription group of the speech workers ($share/<group>/...).",
    )
    tts_engine: TextToSpeechEngine = Field(
        default=TextToSpeechEngine.ESPEAK,
        description="Spoken answers: espeak, flite, wyoming or none.",
    )
    tts_url: str | None = Field(default=None, description="The Wyoming TTS: tcp://host:port.")
    tts_voice: str | None = Field(
        default=None, description="Voice name for the TTS engine; unset: the language's default."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    @field_validator("edge_public_url")
    @classmethod
    def _check_edge_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError(f"expected ws(s)://host:port/path, got {value!r}")
        return value or None

    @field_validator("base_topic")
    @classmethod
    def _check_base(cls, value: str) -> str:
        TopicTree(base=value)
        return value

    @field_validator("discovery_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        TopicTree(discovery_prefix=value)
        return value

    @field_validator("hub_id")
    @classmethod
    def _check_hub_id(cls, value: str) -> str:
        return validate_id(value, what="hub id")

    @field_validator("hub_share_group")
    @classmethod
    def _check_share_group(cls, value: str) -> str:
        return validate_id(value, what="share group")

    @property
    def speech_cache(self) -> Path:
        """Where built recognisers are kept: ``speech_cache_dir`` or its default."""
        return self.speech_cache_dir or self.state_dir / "speech-cache"

    @model_validator(mode="after")
    def _check_hub_tls(self) -> HubSettings:
        if (self.hub_tls_cert_file is None) != (self.hub_tls_key_file is None):
            raise ValueError("XIAOZHI_HUB_TLS_CERT_FILE and XIAOZHI_HUB_TLS_KEY_FILE go together")
        if self.hub_tls_self_signed and self.hub_tls_cert_file is not None:
            raise ValueError(
                "XIAOZHI_HUB_TLS_SELF_SIGNED or XIAOZHI_HUB_TLS_CERT_FILE: one certificate"
            )
        return self

    @field_validator("speech_share_group")
    @classmethod
    def _check_speech_group(cls, value: str) -> str:
        return validate_id(value, what="share group")

    @model_validator(mode="after")
    def _check_speech_services(self) -> HubSettings:
        remote = (SpeechToTextEngine.WYOMING, SpeechToTextEngine.OPENAI)
        if self.stt_engine in remote and not self.stt_url:
            raise ValueError(f"stt_engine {self.stt_engine.value} needs XIAOZHI_STT_URL")
        if self.tts_engine is TextToSpeechEngine.WYOMING and not self.tts_url:
            raise ValueError("tts_engine wyoming needs XIAOZHI_TTS_URL")
        for name in ("stt_url", "tts_url"):
            url = getattr(self, name)
            if url and (name == "tts_url" or self.stt_engine is SpeechToTextEngine.WYOMING):
                host_port(url)
        return self

    @field_validator("activation_hmac_keys")
    @classmethod
    def _check_hmac_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_hmac_keys(value.get_secret_value())
        return value

    @property
    def hmac_keys(self) -> dict[str, bytes]:
        """Each board's eFuse HMAC key by serial number (``activation_hmac_keys``)."""
        raw = self.activation_hmac_keys
        return parse_hmac_keys(raw.get_secret_value()) if raw is not None else {}

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        return intent_language(value)

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"expected debug, info, warning or error, got {value!r}")
        return value.lower()

    @property
    def topics(self) -> TopicTree:
        """The topic tree under :attr:`base_topic` and :attr:`discovery_prefix`."""
        return TopicTree(base=self.base_topic, discovery_prefix=self.discovery_prefix)

    @property
    def api_key_roles(self) -> dict[str, ApiRole]:
        """Each configured API key and its role."""
        return parse_api_keys(self.api_keys)

    def public_config(self) -> dict[str, object]:
        """The settings safe to publish on ``bridge/info`` (no secrets, no keys)."""
        return {
            "base_topic": self.base_topic,
            "discovery_prefix": self.discovery_prefix,
            "discovery_enabled": self.discovery_enabled,
            "discover_simulated": self.discover_simulated,
            "hub_id": self.hub_id,
            "hub_share_group": self.hub_share_group,
            "hub_port": self.hub_port,
            "language": self.language,
            "device_binary_version": self.device_binary_version,
            "config": str(self.config) if self.config else "demo",
        }


def load_hub_settings(**overrides: object) -> HubSettings:
    """Read the environment (``overrides`` win); raise :class:`HubSettingsError` listing every
    invalid field and the value it had.
    """
    try:
        settings = HubSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise HubSettingsError(describe_invalid_settings(err)) from err
    try:
        settings.mqtt_tls()  # a missing or unreadable certificate is a setting error, now
        if settings.hub_tls_cert_file is not None and settings.hub_tls_key_file is not None:
            server_tls_context(
                settings.hub_tls_cert_file, settings.hub_tls_key_file, setting="XIAOZHI_HUB_TLS"
            )
    except ConfigurationError as err:
        raise HubSettingsError(f"invalid settings:\n  {err}") from err
    return settings


def resolve_hub_tls(settings: HubSettings) -> HubCertificate | None:
    """The certificate the HTTP port serves https with, None for plain http (the default).

    ``XIAOZHI_HUB_TLS_CERT_FILE``/``_KEY_FILE`` as given; with ``XIAOZHI_HUB_TLS_SELF_SIGNED``
    the one :func:`~xiaozhi_runtime.tls.self_signed_certificate` keeps in the state dir, for
    :func:`~xiaozhi_runtime.tls.machine_names` (made again when a name is new).

    Raises:
        HubSettingsError: the self-signed certificate cannot be written.
    """
    if settings.hub_tls_cert_file is not None and settings.hub_tls_key_file is not None:
        return HubCertificate(settings.hub_tls_cert_file, settings.hub_tls_key_file, made=False)
    if not settings.hub_tls_self_signed:
        return None
    names = machine_names(settings.hub_host)
    try:
        cert, key, made = self_signed_certificate(settings.state_dir, names)
    except OSError as err:
        raise HubSettingsError(f"cannot write the self-signed certificate: {err}") from err
    return HubCertificate(cert, key, made=made, names=tuple(names))


@dataclass(frozen=True, slots=True)
class HubCertificate:
    """The HTTP port's certificate and key files; ``made`` when generated at this start."""

    cert_file: Path
    key_file: Path
    made: bool
    names: tuple[str, ...] = ()
    """What a self-signed one names (empty for the operator's own)."""


def resolve_secret(settings: HubSettings) -> bytes:
    """The token-signing secret: ``XIAOZHI_SECRET``, else ``<state_dir>/secret``, created with
    mode 0600 on first run (concurrent first runs agree: the file is created exclusively).

    Raises:
        HubSettingsError: the secret file cannot be read or written, or is empty.
    """
    if settings.secret is not None and settings.secret.get_secret_value():
        return settings.secret.get_secret_value().encode()
    path = settings.state_dir / SECRET_FILE_NAME
    try:
        value = read_or_create_secret(path, nbytes=_SECRET_BYTES)
    except (OSError, UnicodeDecodeError) as err:
        raise HubSettingsError(
            f"cannot read or create the secret file {path}: {err} "
            "(set XIAOZHI_SECRET or XIAOZHI_STATE_DIR)"
        ) from err
    if not value:
        raise HubSettingsError(f"the secret file {path} is empty: delete it or set XIAOZHI_SECRET")
    return value.encode()


def parse_hmac_keys(raw: str) -> dict[str, bytes]:
    """``"SN1=00ff..,SN2=.."`` → ``{"SN1": b"\\x00\\xff..", ...}``.

    Raises:
        ValueError: an entry without ``=``, or a key that is not hex (the value is not quoted:
            it is a secret).
    """
    keys: dict[str, bytes] = {}
    for item in raw.split(","):
        entry = item.strip()
        if not entry:
            continue
        serial, sep, key = entry.partition("=")
        if not sep or not serial.strip():
            raise ValueError("activation HMAC key entries are serial=hexkey")
        try:
            keys[serial.strip()] = bytes.fromhex(key.strip())
        except ValueError:
            raise ValueError(f"the HMAC key of serial {serial.strip()!r} is not hex") from None
    return keys


def resolve_device_token_key(settings: HubSettings) -> Ed25519PrivateKey:
    """The key that signs device tokens: ``XIAOZHI_DEVICE_TOKEN_KEY``, else
    ``<state_dir>/device_token_key`` (created 0600 on first run). Either way its public half
    is written to ``device_token_public_key_file`` (default ``<state_dir>/device_token_key.pub``)
    for edges to read.

    Raises:
        HubSettingsError: the key is malformed, or its files cannot be read or written.
    """
    path = settings.state_dir / DEVICE_TOKEN_KEY_FILE_NAME
    try:
        if settings.device_token_key is not None and settings.device_token_key.get_secret_value():
            text = settings.device_token_key.get_secret_value()
        else:
            text = read_or_create_secret(path, nbytes=32)  # 32 random bytes = an Ed25519 seed
        key = private_key_from_text(text)
        public = settings.device_token_public_key_file or (
            settings.state_dir / DEVICE_TOKEN_PUBLIC_KEY_FILE_NAME
        )
        _write_public(public, public_key_text(key))
    except ConfigurationError as err:
        raise HubSettingsError(f"{err} (XIAOZHI_DEVICE_TOKEN_KEY or {path})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise HubSettingsError(
            f"cannot read or create the device token key {path}: {err} "
            "(set XIAOZHI_DEVICE_TOKEN_KEY or XIAOZHI_STATE_DIR)"
        ) from err
    return key


def _write_public(path: Path, text: str) -> None:
    """Write the public key whole (a reader never sees half of it); skip when unchanged."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="ascii").strip() == text:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text + "\n", encoding="ascii")
    os.replace(temporary, path)


def derive_jwt_secret(settings: HubSettings, secret: bytes) -> bytes:
    """``XIAOZHI_JWT_SECRET``, else a key derived from the token secret (module docstring)."""
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value().encode()
    return hmac.new(secret, _JWT_LABEL, hashlib.sha256).digest()
