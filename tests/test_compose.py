"""compose.yaml and the Dockerfile, checked without a Docker engine (none runs here).

What `docker compose up` would trip over, found by reading the files: an unpinned image, a
command the `xiaozhi` CLI refuses, a mounted file that does not exist, an `XIAOZHI_*` variable
no settings class reads, two services on one host port, a URL naming a service or port nobody
listens on, a `depends_on` to nothing, a Dockerfile COPY of a missing folder. Compose
interpolation (`${VAR:-default}`, `$$`) is applied with an empty environment: what a fresh
clone without a `.env` file gets. Each test lists every problem it finds, not just the first.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from tests.production_broker import production_broker
from tests.support import Recorder, record
from tests.test_emqx import EMQX_ETC, authenticators, get, read_hocon
from tests.test_emqx import listeners as emqx_listeners
from xiaozhi_cli.broker import DEV_CONFIG, ManagedMosquitto, find_mosquitto
from xiaozhi_cli.main import build_parser
from xiaozhi_cli.settings import UpSettings
from xiaozhi_edge.settings import EdgeSettings
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.settings import SimSettings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# Which settings classes a process started by each sub-command reads.
SETTINGS_OF: dict[str, tuple[type[BaseSettings], ...]] = {
    "edge": (EdgeSettings,),
    "hub": (HubSettings,),
    "sim": (SimSettings,),
    "up": (UpSettings, EdgeSettings, HubSettings, SimSettings),
}
MOSQUITTO_CONFIG_TARGET = "/mosquitto/config/mosquitto.conf"
EMQX_CONFIG_TARGET = "/opt/emqx/etc/emqx.conf"
CLUSTER_PROFILE = "cluster"
# Mosquitto options that name a file or folder the broker must find inside its container.
MOSQUITTO_PATH_OPTIONS = (
    "password_file",
    "acl_file",
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "persistence_location",
    "include_dir",
)
# dev.conf's answers to the broker facts measured in design.md section 8: every broker config
# compose may mount keeps them.
MEASURED_BROKER_OPTIONS = (
    "max_queued_messages",
    "max_queued_bytes",
    "queue_qos0_messages",
    "set_tcp_nodelay",
    "persistence",
    "autosave_interval",
    "max_packet_size",
)
COMPOSE_TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets"}
# The compose-spec service keys this project may reasonably use; a typo (`depend_on`) is
# silently ignored by some compose versions, so it is refused here.
COMPOSE_SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "volumes", "depends_on", "healthcheck", "restart", "init", "stop_grace_period",
    "stop_signal", "user", "working_dir", "networks", "network_mode", "hostname", "labels",
    "logging", "ulimits", "sysctls", "deploy", "profiles", "container_name", "tmpfs",
    "read_only", "cap_drop", "cap_add", "security_opt", "mem_limit", "cpus", "pids_limit",
    "extra_hosts", "configs", "secrets", "tty", "stdin_open",
}  # fmt: skip
# scheme, host, port; a `user:password@` before the host is skipped.
_URL = re.compile(r"\b(mqtt|tcp|http|https|ws|wss)://(?:[^\s'\"/@]*@)?([^\s'\"/:]+)(?::(\d+))?")
_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "http": 80, "https": 443, "ws": 80, "wss": 443}
_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# ---------------------------------------------------------------------------------- compose


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-spec interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
    `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`.

    Raises:
        ValueError: a required variable (`?`) is unset.
    """

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        present = name in env
        filled = present and env[name] != ""
        if op in (":-", "-"):
            return env[name] if (filled if op == ":-" else present) else arg
        if op in (":?", "?"):
            if not (filled if op == ":?" else present):
                raise ValueError(f"${{{name}}} is required: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if (filled if op == ":+" else present) else ""
        return env.get(name, "")

    return _VARIABLE.sub(one, value)


def _interpolate_all(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_all(item, env) for key, item in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose sees it: YAML anchors merged, variables interpolated."""
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return _interpolate_all(raw, env or {})


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, mapping or `KEY=value` list form, values as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def is_built_here(service: Mapping[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (REPO / context / dockerfile).resolve() == DOCKERFILE


def parsed_command(service: Mapping[str, Any]) -> argparse.Namespace:
    """The service's command as the image's ENTRYPOINT `xiaozhi` parses it."""
    return build_parser().parse_args([str(arg) for arg in service["command"]])


def role(service: Mapping[str, Any]) -> str | None:
    """`broker` for the Mosquitto image, `emqx` for an EMQX node (profile `cluster`), else the
    `xiaozhi` sub-command (`edge`, `hub`...)."""
    if str(service.get("image", "")).startswith("eclipse-mosquitto:"):
        return "broker"
    if str(service.get("image", "")).startswith("emqx/emqx:"):
        return "emqx"
    if is_built_here(service) and isinstance(service.get("command"), list):
        return str(service["command"][0])
    return None


@contextlib.contextmanager
def only_env(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with every XIAOZHI_* variable replaced by `env` (settings read os.environ)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("XIAOZHI_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume: type `bind` or `volume` (named)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((entry.get("type", "volume"), entry.get("source", ""), entry["target"]))
            continue
        parts = entry.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def mosquitto_options(path: Path) -> dict[str, list[str]]:
    """Each option of a Mosquitto config with every value it is given, in order."""
    options: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split(None, 1)
        if words:
            options.setdefault(words[0], []).append(words[1].strip() if len(words) > 1 else "")
    return options


def mounted_broker_config(service: Mapping[str, Any]) -> Path:
    for kind, source, target in volume_mounts(service):
        if kind == "bind" and target == MOSQUITTO_CONFIG_TARGET:
            return (REPO / source).resolve()
    raise AssertionError(f"the broker service mounts nothing at {MOSQUITTO_CONFIG_TARGET}")


def mounted_emqx_config(service: Mapping[str, Any]) -> dict[str, Any]:
    """The emqx.conf an EMQX node runs: the mounted file, then the node's `EMQX_*` variables
    (EMQX_NODE__NAME sets node.name; they take precedence over the file)."""
    for kind, source, target in volume_mounts(service):
        if kind == "bind" and target == EMQX_CONFIG_TARGET:
            conf = read_hocon((REPO / source).read_text(encoding="utf-8"))
            break
    else:
        raise AssertionError(f"the EMQX service mounts nothing at {EMQX_CONFIG_TARGET}")
    for key, value in environment(service).items():
        if key.startswith("EMQX_"):
            path = key.removeprefix("EMQX_").lower().split("__")
            node = conf
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
    return conf


def aliases(service: Mapping[str, Any]) -> set[str]:
    """The service's network aliases (other containers reach it by these names too)."""
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return set()
    return {alias for spec in networks.values() for alias in (spec or {}).get("aliases", [])}


def services_named(host: str, all_services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The services a host name reaches: the service itself, or every one with that alias."""
    if host in all_services:
        return [host]
    return [name for name, service in all_services.items() if host in aliases(service)]


def listening_ports(name: str, all_services: Mapping[str, Mapping[str, Any]]) -> set[int]:
    """The container ports a service listens on, from its config and settings."""
    service = all_services[name]
    kind = role(service)
    if kind == "broker":
        listeners = mosquitto_options(mounted_broker_config(service)).get("listener", [])
        return {int(value.split()[0]) for value in listeners}
    if kind == "emqx":
        return {listener.port for listener in emqx_listeners(mounted_emqx_config(service))}
    if kind in ("edge", "hub"):
        with only_env(environment(service)):
            if kind == "edge":
                return {EdgeSettings().edge_port}
            port = getattr(parsed_command(service), "port", None)
            return {port if port is not None else HubSettings().hub_port}
    return set()


def published_ports(service: Mapping[str, Any]) -> list[tuple[int | None, int, str]]:
    """(host port or None for a random one, container port, protocol) of each `ports` entry."""
    found = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            found.append(
                (
                    int(published) if published else None,
                    int(entry["target"]),
                    entry.get("protocol", "tcp"),
                )
            )
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        host = parts[-2] if len(parts) >= 2 else ""
        found.append((int(host) if host else None, int(parts[-1]), protocol or "tcp"))
    return found


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from strings_in(item)


def test_interpolation_follows_the_compose_spec() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$SYS ${SET} $SET", env) == "$SYS v v"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET}", env) == "d||d|"
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    with pytest.raises(ValueError, match="UNSET"):
        interpolate("${UNSET:?set it}", env)


def test_compose_file_has_the_layout_of_design_section_7() -> None:
    document = load_compose()  # parses, and needs no variable a fresh clone lacks
    unknown = {k for k in document if k not in COMPOSE_TOP_LEVEL and not k.startswith("x-")}
    assert not unknown, f"not compose-spec top-level keys: {sorted(unknown)}"
    roles = [role(service) for service in document["services"].values()]
    assert roles.count("broker") == 1, roles
    assert roles.count("edge") >= 2, f"design section 7 scales edges out; got {roles}"
    assert roles.count("hub") >= 1, roles
    assert roles.count("sim") >= 1, roles


def test_every_service_key_is_a_compose_service_key() -> None:
    problems = [
        f"{name}: {key!r}"
        for name, service in services().items()
        for key in service
        if key not in COMPOSE_SERVICE_KEYS
    ]
    assert not problems, f"unknown service keys (typos?): {problems}"


def test_every_image_is_pinned_or_built_from_this_dockerfile() -> None:
    problems = []
    for name, service in services().items():
        if is_built_here(service):
            continue
        if "build" in service:
            problems.append(f"{name}: builds from something other than {DOCKERFILE.name}")
            continue
        image = str(service.get("image", ""))
        _, _, tag = image.rpartition(":")
        pinned = "@sha256:" in image or (
            ":" in image and "/" not in tag and tag != "latest" and re.search(r"\d", tag)
        )
        if not pinned:
            problems.append(f"{name}: image {image!r} is not a pinned version tag")
    assert not problems, problems


def test_the_image_built_here_is_tagged_with_the_package_version() -> None:
    version = PYPROJECT["project"]["version"]
    tags = {str(s.get("image")) for s in services().values() if is_built_here(s)}
    assert tags, "no service is built from this repository's Dockerfile"
    assert tags == {f"xiaozhi-hub:{version}"}, f"pyproject version is {version}; images {tags}"


def test_every_command_is_a_xiaozhi_sub_command_the_cli_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    problems = []
    for name, service in services().items():
        if not is_built_here(service):
            continue
        if "entrypoint" in service:
            problems.append(f"{name}: overrides the image's `xiaozhi` entrypoint")
        command = service.get("command")
        if not isinstance(command, list) or not command:
            problems.append(f"{name}: command must be an exec-form list, got {command!r}")
            continue
        try:
            args = parsed_command(service)
        except SystemExit:
            refusal = capsys.readouterr().err.strip()
            problems.append(f"{name}: xiaozhi {shlex.join(map(str, command))}: {refusal}")
            continue
        if not callable(getattr(args, "func", None)):
            problems.append(f"{name}: {command!r} selects no sub-command")
    assert not problems, "\n".join(problems)


def test_every_xiaozhi_variable_is_a_setting_of_the_process_that_gets_it() -> None:
    problems = []
    for name, service in services().items():
        kind = role(service)
        env = environment(service)
        names = {k for k in env if k.startswith("XIAOZHI_")}
        if names and kind not in SETTINGS_OF:
            problems.append(f"{name}: XIAOZHI_* variables but no xiaozhi process: {sorted(names)}")
            continue
        known = {
            f"XIAOZHI_{field.upper()}"
            for cls in SETTINGS_OF.get(kind or "", ())
            for field in cls.model_fields
        }
        problems += [f"{name} ({kind}): {var} is no setting" for var in sorted(names - known)]
    assert not problems, problems


def test_every_service_environment_is_valid_for_its_settings() -> None:
    problems = []
    for name, service in services().items():
        for cls in SETTINGS_OF.get(role(service) or "", ()):
            with only_env(environment(service)):
                try:
                    cls()
                except ValueError as err:  # pydantic's ValidationError is a ValueError
                    problems.append(f"{name}: {cls.__name__}: {err}")
    assert not problems, "\n".join(problems)


def test_mounted_host_paths_exist_and_named_volumes_are_declared() -> None:
    document = load_compose()
    declared = set(document.get("volumes") or {})
    problems = []
    for name, service in document["services"].items():
        for kind, source, target in volume_mounts(service):
            if kind == "bind" and not (REPO / source).exists():
                problems.append(f"{name}: {source} (mounted at {target}) is not in the repository")
            if kind == "volume" and source and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under volumes")
    assert not problems, problems


def test_published_host_ports_do_not_clash() -> None:
    owners: dict[tuple[int, str], list[str]] = {}
    for name, service in services().items():
        for host, _, protocol in published_ports(service):
            if host is not None:
                owners.setdefault((host, protocol), []).append(name)
    clashes = {
        f"{port}/{proto}": names for (port, proto), names in owners.items() if len(names) > 1
    }
    assert not clashes, f"host ports published twice: {clashes}"


def test_published_ports_and_urls_reach_a_port_someone_listens_on() -> None:
    all_services = services()
    ports = {name: listening_ports(name, all_services) for name in all_services}
    problems = []
    for name, service in all_services.items():
        for _, target, _ in published_ports(service):
            if target not in ports[name]:
                problems.append(
                    f"{name}: publishes container port {target}, listens on {ports[name]}"
                )
        places = [environment(service), service.get("command"), service.get("healthcheck")]
        for text in strings_in(places):
            for scheme, host, port in _URL.findall(text):
                peers = [name] if host in ("127.0.0.1", "localhost") else []
                peers = peers or services_named(host, all_services)
                number = int(port) if port else _DEFAULT_PORTS[scheme]
                if not peers:
                    problems.append(f"{name}: {scheme}://{host}:{number} names no service")
                for peer in peers:
                    if number not in ports[peer]:
                        problems.append(
                            f"{name}: {scheme}://{host}:{number}, but {peer} listens on "
                            f"{ports[peer]}"
                        )
    assert not problems, "\n".join(problems)


def test_depends_on_names_services_with_the_healthchecks_it_waits_for() -> None:
    all_services = services()
    problems = []
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        conditions = (
            {dep: "service_started" for dep in depends}
            if isinstance(depends, list)
            else {
                dep: (spec or {}).get("condition", "service_started")
                for dep, spec in depends.items()
            }
        )
        for dep, condition in conditions.items():
            if dep not in all_services:
                problems.append(f"{name}: depends on unknown service {dep!r}")
                continue
            check = all_services[dep].get("healthcheck") or {}
            if condition == "service_healthy" and (not check.get("test") or check.get("disable")):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
    assert not problems, problems


def test_every_file_the_mounted_broker_config_names_is_mounted_in_the_container() -> None:
    problems = []
    for name, service in services().items():
        if role(service) != "broker":
            continue
        options = mosquitto_options(mounted_broker_config(service))
        targets = [PurePosixPath(target) for _, _, target in volume_mounts(service)]
        for option in MOSQUITTO_PATH_OPTIONS:
            for value in options.get(option, []):
                path = PurePosixPath(value)
                if not any(path == t or t in path.parents for t in targets):
                    problems.append(f"{name}: {option} {value} is outside every mount")
        if not options.get("listener"):
            problems.append(f"{name}: no listener (Mosquitto 2 then serves localhost only)")
    assert not problems, problems


@pytest.mark.parametrize("config", ["compose.conf", "production.conf"])
def test_broker_configs_keep_the_measured_settings_of_dev_conf(config: str) -> None:
    dev = mosquitto_options(DEV_CONFIG)
    other = mosquitto_options(REPO / "mosquitto" / config)
    drift = {
        key: (dev.get(key), other.get(key))
        for key in MEASURED_BROKER_OPTIONS
        if dev.get(key) != other.get(key)
    }
    assert not drift, f"{config} differs from dev.conf (dev, {config}): {drift}"


@pytest.mark.integration
def test_a_real_mosquitto_runs_the_compose_config_and_passes_the_healthcheck(
    tmp_path: Path,
) -> None:
    """The options of compose.conf are ones Mosquitto accepts, and the compose healthcheck
    command gets an answer from it (a `$SYS` written without compose's `$$` would not).
    """
    find_mosquitto()
    broker_service = next(s for s in services().values() if role(s) == "broker")
    # The runner owns listener and persistence location (a free loopback port, tmp_path).
    body = [
        line
        for line in mounted_broker_config(broker_service).read_text(encoding="utf-8").splitlines()
        if not line.startswith(("listener", "persistence_location"))
    ]
    config = tmp_path / "compose-body.conf"
    config.write_text("\n".join(body) + "\n", encoding="utf-8")
    test = broker_service["healthcheck"]["test"]
    assert test[0] == "CMD", test
    with ManagedMosquitto(tmp_path / "state", config=config) as broker:
        done = subprocess.run(
            [*test[1:], "-p", str(broker.port)], capture_output=True, text=True, timeout=15
        )
    assert done.returncode == 0, f"healthcheck {test[1:]} failed: {done.stderr or done.stdout}"
    assert done.stdout.strip(), "the healthcheck topic gave no message"


# ------------------------------------------------------------------ profile `cluster` (EMQX)


def in_cluster_profile(service: Mapping[str, Any]) -> bool:
    return CLUSTER_PROFILE in (service.get("profiles") or [])


def emqx_nodes() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if role(s) == "emqx"}


def _mounted_source(service: Mapping[str, Any], target: str) -> Path | None:
    for kind, source, mount in volume_mounts(service):
        if kind == "bind" and mount == target:
            return (REPO / source).resolve()
    return None


def test_the_cluster_profile_runs_the_system_on_emqx_alone() -> None:
    """`docker compose --profile cluster up` adds an EMQX cluster and its own hubs, edges and
    simulator; none of them talks to the default stack's Mosquitto, and the default stack
    needs nothing of the profile."""
    all_services = services()
    profile = {name for name, s in all_services.items() if in_cluster_profile(s)}
    nodes = set(emqx_nodes())
    roles = [role(all_services[name]) for name in sorted(profile)]
    problems = []
    if len(nodes) < 2 or not nodes <= profile:
        problems.append(f"EMQX nodes {sorted(nodes)}: at least two, all in the profile")
    if roles.count("hub") < 1 or roles.count("edge") < 2:
        problems.append(f"the profile has {roles}: a hub and two edges at least")
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        for dep in depends:
            if (dep in profile) != (name in profile):
                problems.append(f"{name} depends on {dep} across the profile's boundary")
        url = environment(service).get("XIAOZHI_MQTT_URL")
        if url is None:
            continue
        brokers = {
            peer for _, host, _ in _URL.findall(url) for peer in services_named(host, all_services)
        }
        wanted = (
            nodes
            if name in profile
            else {n for n, s in all_services.items() if role(s) == "broker"}
        )
        if not brokers or not brokers <= wanted:
            problems.append(f"{name}: XIAOZHI_MQTT_URL reaches {sorted(brokers)}")
    assert not problems, "\n".join(problems)


def test_the_emqx_nodes_form_one_cluster() -> None:
    problems = []
    names, seeds, cookies, configs = {}, {}, set(), set()
    for name, service in emqx_nodes().items():
        conf = mounted_emqx_config(service)
        node_name = str(get(conf, "node.name"))
        names[name] = node_name
        host = node_name.partition("@")[2]
        if "." not in host or host not in aliases(service):
            problems.append(f"{name}: node name {node_name}: its host must be an alias with a dot")
        if get(conf, "cluster.discovery_strategy") != "static":
            problems.append(f"{name}: discovery {get(conf, 'cluster.discovery_strategy')}")
        raw_seeds = get(conf, "cluster.static.seeds")
        if isinstance(raw_seeds, str):  # from the environment: `[a@x, b@y]`
            raw_seeds = [s.strip() for s in raw_seeds.strip("[]").split(",")]
        seeds[name] = set(raw_seeds)
        cookies.add(str(get(conf, "node.cookie")))
        configs.add(_mounted_source(service, EMQX_CONFIG_TARGET))
    if len(set(names.values())) != len(names):
        problems.append(f"node names repeat: {names}")
    problems += [
        f"{name}: seeds {sorted(s)}, nodes {sorted(names.values())}"
        for name, s in seeds.items()
        if s != set(names.values())
    ]
    placeholder = get(
        read_hocon((REPO / "emqx" / "emqx.conf").read_text(encoding="utf-8")), "node.cookie"
    )
    if len(cookies) != 1 or placeholder in cookies:
        problems.append(f"every node needs the same cookie, set in its environment: {cookies}")
    if len(configs) != 1:
        problems.append(f"the nodes run different configs: {configs}")
    assert not problems, "\n".join(problems)


def _paths_in(node: Any) -> Iterator[str]:
    for value in strings_in(node):
        if value.startswith(("/", "${EMQX_ETC_DIR}")):
            yield value


def test_every_file_emqx_conf_names_is_mounted_or_shipped_in_the_image() -> None:
    """Our files (ACL, user lists) are mounted on every node; the certificates are the
    image's own demo pair under ${EMQX_ETC_DIR}/certs (docs/operations.md §10: mount yours)."""
    problems = []
    for name, service in emqx_nodes().items():
        conf = mounted_emqx_config(service)
        targets = {target for _, _, target in volume_mounts(service)}
        for path in _paths_in(conf):
            if path.startswith("${EMQX_ETC_DIR}/certs/"):
                continue
            if path not in targets:
                problems.append(f"{name}: emqx.conf names {path}, which is not mounted")
        if f"{EMQX_ETC}/xiaozhi/acl.conf" not in targets:
            problems.append(f"{name}: acl.conf is not mounted")
        if "/opt/emqx/data" not in targets:
            problems.append(f"{name}: /opt/emqx/data (sessions, retained messages) is no volume")
    assert not problems, "\n".join(problems)


def _users(csv_file: Path) -> dict[str, tuple[str, str]]:
    """user_id → (password, is_superuser) of an EMQX bootstrap file (plain passwords)."""
    lines = csv_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id,password,is_superuser", f"{csv_file}: header {lines[0]!r}"
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    return {user: (password, superuser) for user, password, superuser in rows}


def test_cluster_services_log_in_as_users_of_the_private_listener() -> None:
    """The hubs and edges of the profile use the private listener, as the users its user list
    holds, with their passwords; nobody is a superuser (a superuser skips acl.conf)."""
    all_services = services()
    node = next(iter(emqx_nodes().values()))
    listeners = {listener.port: listener for listener in emqx_listeners(mounted_emqx_config(node))}
    problems = []
    lists = {}
    for listener in listeners.values():
        bootstrap = authenticators(mounted_emqx_config(node), listener)[0]["bootstrap_file"]
        source = _mounted_source(node, bootstrap)
        if source is None:
            problems.append(f"{listener.id}: {bootstrap} is not mounted")
            continue
        lists[listener.port] = _users(source)
        problems += [
            f"{source.name}: {user} is a superuser"
            for user, (_, superuser) in lists[listener.port].items()
            if superuser != "false"
        ]
    for name, service in all_services.items():
        url = environment(service).get("XIAOZHI_MQTT_URL")
        if not in_cluster_profile(service) or url is None:
            continue
        found = re.match(r"mqtts?://([^:@/]+):([^@/]+)@[^/:]+:(\d+)", url)
        if found is None:
            problems.append(f"{name}: {url} has no user and password")
            continue
        user, password, port = found.group(1), found.group(2), int(found.group(3))
        listener = listeners.get(port)
        if listener is None or listener.zone != "private":
            problems.append(f"{name}: port {port} is not a private listener")
        elif lists.get(port, {}).get(user, ("", ""))[0] != password:
            problems.append(f"{name}: {user} with that password is not in {listener.id}'s users")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        word, _, rest = (current + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        current = ""
    return instructions


def _args(rest: str) -> list[str]:
    """Exec-form JSON or shell words."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def _ignored(path: str, patterns: list[str]) -> bool:
    candidates = [path, *(str(p) for p in PurePosixPath(path).parents if str(p) != ".")]
    return any(fnmatch.fnmatchcase(c, p.strip("/")) for p in patterns for c in candidates)


def _dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "!"))]


def test_dockerfile_copies_existing_sources_and_every_package() -> None:
    ignored = _dockerignore()
    copied: set[str] = set()
    problems = []
    for word, rest in dockerfile():
        if word not in ("COPY", "ADD"):
            continue
        words = [w for w in _args(rest) if not w.startswith("--")]
        if "--from=" in rest:
            continue
        for source in words[:-1]:
            copied.add(source.rstrip("/"))
            if not (REPO / source).exists():
                problems.append(f"{word} {source}: not in the repository")
            elif _ignored(source.rstrip("/"), ignored):
                problems.append(f"{word} {source}: excluded by .dockerignore")
    package_dirs = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    needed = package_dirs | {"pyproject.toml", PYPROJECT["project"]["readme"]}
    problems += [
        f"{path} is never copied (pip install . needs it)" for path in sorted(needed - copied)
    ]
    assert not problems, problems


def test_dockerignore_keeps_checkout_state_and_secrets_out_of_the_image() -> None:
    # var/ holds the dev secret and API key of `xiaozhi up`; .venv is a host interpreter's.
    ignored = _dockerignore()
    leaked = [p for p in (".git", ".venv", "var", "edge/__pycache__") if not _ignored(p, ignored)]
    assert not leaked, f"sent to the build context: {leaked}"


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    entrypoints = [_args(rest) for word, rest in dockerfile() if word == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    scripts = PYPROJECT["project"]["scripts"]
    assert len(entrypoints[-1]) == 1, entrypoints[-1]
    assert entrypoints[-1][0] in scripts, f"{entrypoints[-1]} is not one of {sorted(scripts)}"


def _apt_installs() -> tuple[set[str], set[str]]:
    """(packages, flags) of every `apt-get install` in the RUN instructions."""
    packages: set[str] = set()
    flags: set[str] = set()
    for word, rest in dockerfile():
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = command.split()
            if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                after = words[words.index("install") + 1 :]
                packages |= {w for w in after if not w.startswith("-")}
                flags |= {w for w in words if w.startswith("-")}
    return packages, flags


def test_dockerfile_installs_libopus0_without_recommends() -> None:
    packages, flags = _apt_installs()
    assert "libopus0" in packages, f"opuslib needs libopus0; installed: {sorted(packages)}"
    assert "--no-install-recommends" in flags, flags


def test_dockerfile_base_runs_the_required_python_as_a_non_root_user() -> None:
    instructions = dockerfile()
    base = next(rest for word, rest in instructions if word == "FROM")
    found = re.fullmatch(r"python:(\d+)\.(\d+)-[\w.-]+", base)
    assert found, f"base {base!r} is not a pinned python:X.Y-variant image"
    required = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert required, PYPROJECT["project"]["requires-python"]
    assert tuple(map(int, found.groups())) >= tuple(map(int, required.groups())), base
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]


def test_dockerfile_sets_only_real_settings_and_exposes_the_default_ports() -> None:
    instructions = dockerfile()
    known = {f"XIAOZHI_{field.upper()}" for cls in SETTINGS_OF["up"] for field in cls.model_fields}
    env_names = {
        item.split("=", 1)[0]
        for word, rest in instructions
        if word == "ENV"
        for item in shlex.split(rest)
    }
    unknown = {n for n in env_names if n.startswith("XIAOZHI_")} - known
    assert not unknown, f"Dockerfile ENV names no setting: {sorted(unknown)}"
    exposed = {
        int(port.split("/")[0])
        for word, rest in instructions
        if word == "EXPOSE"
        for port in rest.split()
    }
    defaults = {
        EdgeSettings.model_fields["edge_port"].default,
        HubSettings.model_fields["hub_port"].default,
    }
    assert defaults <= exposed, f"EXPOSE {sorted(exposed)}; the default ports are {defaults}"


def test_package_data_carries_every_yaml_file_a_non_editable_install_needs() -> None:
    # The image installs a wheel, not the source tree: data files travel only as package-data.
    tools = PYPROJECT["tool"]["setuptools"]
    missing = []
    for package, folder in tools["package-dir"].items():
        root = REPO / folder
        shipped = {
            path
            for pattern in tools.get("package-data", {}).get(package, [])
            for path in root.glob(pattern)
        }
        missing += [
            str(path.relative_to(REPO))
            for path in root.rglob("*.yaml")
            if "__pycache__" not in path.parts and path not in shipped
        ]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


# ------------------------------------------------------------------- production broker ACL

# Who may publish what under mosquitto/acl-private and acl-public (docs/operations.md lists the
# same): (user, topic, allowed). With ACLs on, a refused publish is acknowledged and silently
# dropped (home-automation reference, pain 8), so only a test that watches delivery notices it.
ACL_PUBLISH = [
    ("xiaozhi-edge", "xiaozhi/events/voice_command", True),
    ("xiaozhi-edge", "xiaozhi/status/kitchen", True),
    ("xiaozhi-hub", "homeassistant/sensor/xiaozhi_kitchen/config", True),
    ("integrator", "xiaozhi/commands/kitchen", True),
    ("integrator", "xiaozhi/commands/group/downstairs", True),
    ("integrator", "xiaozhi/bridge/request/health_check", True),
    ("integrator", "homeassistant/status", True),  # Home Assistant's birth message
    # Home Assistant switching the hub's own entities; their state is the hub's alone.
    ("integrator", "xiaozhi/entities/light.living_room/set", True),
    ("integrator", "xiaozhi/entities/light.living_room", False),
    ("integrator", "xiaozhi/status/kitchen", False),
    ("integrator", "xiaozhi/events/voice_command", False),
    ("integrator", "homeassistant/sensor/forged/config", False),
    ("kitchen", "xiaozhi/status/kitchen", True),
    ("kitchen", "xiaozhi/sensors/kitchen/temperature", True),
    ("kitchen", "xiaozhi/sensors/kitchen/temperature/deeper", False),
    ("kitchen", "xiaozhi/events/kitchen", True),
    ("kitchen", "xiaozhi/events/voice_command/kitchen", True),
    # Who spoke is the topic's device: the fleet-wide topic is for edges (they vouch for the
    # WebSocket devices they authenticated), and another device's topic is refused.
    ("kitchen", "xiaozhi/events/voice_command", False),
    ("kitchen", "xiaozhi/events/voice_command/hallway", False),
    ("kitchen", "xiaozhi/status/hallway", False),
    ("kitchen", "xiaozhi/commands/hallway", False),
    ("kitchen", "homeassistant/status", False),
    ("kitchen", "xiaozhi/entities/light.living_room/set", False),
]
# What the MQTT device `kitchen` receives of what the hub publishes. Group commands reach it
# through the hub's fan-out onto its own topic, so the group topics stay closed to devices.
ACL_DEVICE_READS = [
    ("xiaozhi/commands/kitchen", True),
    ("xiaozhi/commands/broadcast", True),
    ("xiaozhi/commands/group/downstairs", False),
    ("xiaozhi/commands/hallway", False),
    ("xiaozhi/status/hallway", False),
]
_PRIVATE_USERS = ("xiaozhi-edge", "xiaozhi-hub")
_PUBLIC_USERS = ("integrator", "kitchen")


def _anonymous_publish_fails(port: int) -> bool:
    anonymous = subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", "xiaozhi/status/x", "-m", "{}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return anonymous.returncode != 0


@pytest.mark.integration
async def test_production_acl_lets_each_user_do_what_operations_md_says(tmp_path: Path) -> None:
    """Who receives which `{"case": ...}` tells what the ACL let through."""
    with production_broker(tmp_path, private=_PRIVATE_USERS, public=_PUBLIC_USERS) as prod:
        assert _anonymous_publish_fails(prod.private_port), "an anonymous client was let in"

        def client(user: str, *filters: str) -> contextlib.AbstractAsyncContextManager[Recorder]:
            if user in _PRIVATE_USERS:
                return record(prod.private_url(user), *filters, name=user)
            return record(prod.public_url(user), *filters, name=user, tls=prod.tls)

        async with contextlib.AsyncExitStack() as stack:
            observer = await stack.enter_async_context(
                client("xiaozhi-hub", "xiaozhi/#", "homeassistant/#")
            )
            device = await stack.enter_async_context(
                client("kitchen", "xiaozhi/commands/#", "xiaozhi/status/#")
            )
            publishers = {
                user: await stack.enter_async_context(client(user)) if user != "kitchen" else device
                for user in (*_PRIVATE_USERS, *_PUBLIC_USERS)
            }
            for index, (user, topic, _) in enumerate(ACL_PUBLISH):
                await publishers[user].publish(topic, {"case": f"p{index}"})
            for index, (topic, _) in enumerate(ACL_DEVICE_READS):
                await publishers["xiaozhi-hub"].publish(topic, {"case": f"r{index}"})
            # Mosquitto delivers in the order it accepted: the marker seen means all is in.
            marker = "xiaozhi/commands/kitchen"
            await publishers["xiaozhi-hub"].publish(marker, {"case": "marker"})
            await observer.first(lambda m: m.obj.get("case") == "marker", within=10)
            await device.first(lambda m: m.obj.get("case") == "marker", within=10)
    seen_by_hub = {m.obj.get("case") for m in observer.messages}
    seen_by_device = {m.obj.get("case") for m in device.messages}
    wrong = [
        f"{user} -> {topic}: {'refused' if allowed else 'allowed'}"
        for index, (user, topic, allowed) in enumerate(ACL_PUBLISH)
        if (f"p{index}" in seen_by_hub) != allowed
    ]
    wrong += [
        f"device kitchen reads {topic}: {'no' if allowed else 'yes'}"
        for index, (topic, allowed) in enumerate(ACL_DEVICE_READS)
        if (f"r{index}" in seen_by_device) != allowed
    ]
    assert not wrong, "mosquitto/acl-* disagree with docs/operations.md:\n" + "\n".join(wrong)
