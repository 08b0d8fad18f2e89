"""emqx/ (the EMQX cluster config) against mosquitto/ (the production broker), without an EMQX.

No EMQX runs here (no Docker, no Erlang), so these tests read the files as EMQX 5.8 would:
emqx.conf with a reader of the HOCON it uses, acl.conf with a reader of Erlang terms, and the
ACL rules are evaluated the way EMQX's file authorizer does (first match decides; a publish
matches a rule's topic filter; a subscription's filter must lie inside a rule's filter;
`$share/<group>/` is stripped first). Mosquitto's ACL files are evaluated the way Mosquitto
does (`tests/test_compose.py` shows the real one agrees with the documented table). What is
checked: every line of acl-private and acl-public has its EMQX rule, both answer the same for
every topic the files name (and their neighbours), the listeners, users and measured settings of
production.conf have their EMQX counterparts, and what EMQX refuses beyond Mosquitto is what
docs/operations.md §10 says.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EMQX_CONF = REPO / "emqx" / "emqx.conf"
EMQX_ACL = REPO / "emqx" / "acl.conf"
MOSQUITTO = REPO / "mosquitto"
EMQX_ETC = "/opt/emqx/etc"  # ${EMQX_ETC_DIR} in the emqx/emqx image

# ------------------------------------------------------------------------------------- HOCON

_HOCON_TOKEN = re.compile(
    r"""(?P<space>[ \t\r]+)|(?P<comment>(?:\#|//)[^\n]*)|(?P<newline>\n)
    |(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<punct>[{}\[\],=:])
    |(?P<word>[^\s{}\[\],=:"\#]+)""",
    re.VERBOSE,
)


def _hocon_tokens(text: str) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(text):
        match = _HOCON_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"HOCON: cannot read {text[position : position + 20]!r}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind in ("space", "comment"):
            continue
        value = match.group(0)
        if kind == "string":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        yield kind, value


class _Hocon:
    """A reader of the HOCON subset emqx.conf uses: objects (braces optional at the root),
    dotted keys, `=`/`:` or none before `{`, arrays, quoted and unquoted strings, `#` and `//`
    comments, commas or new lines between fields. Objects given twice merge (HOCON's rule);
    other values given twice: the last wins. Everything is read as a string, not typed."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_hocon_tokens(text))
        self.at = 0

    def peek(self, skip_newlines: bool = True) -> tuple[str, str]:
        while skip_newlines and self.at < len(self.tokens) and self.tokens[self.at][0] == "newline":
            self.at += 1
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.at += 1
        return token

    def document(self) -> dict[str, Any]:
        if self.peek() == ("punct", "{"):
            self.take()
            found = self.fields(closing="}")
        else:
            found = self.fields(closing=None)
        if self.peek()[0] != "end":
            raise ValueError(f"HOCON: unexpected {self.peek()[1]!r} after the document")
        return found

    def fields(self, closing: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {}
        while True:
            kind, value = self.peek()
            if kind == "end" and closing is None:
                return found
            if (kind, value) == ("punct", closing):
                self.take()
                return found
            if (kind, value) == ("punct", ","):
                self.take()
                continue
            if kind not in ("word", "string"):
                raise ValueError(f"HOCON: a key was expected, got {value!r}")
            self.take()
            path = value.split(".") if kind == "word" else [value]
            separator = self.peek()
            if separator in (("punct", "="), ("punct", ":")):
                self.take()
            elif separator != ("punct", "{"):
                raise ValueError(f"HOCON: '=' expected after {value!r}")
            _merge(found, path, self.value())

    def value(self) -> Any:
        kind, value = self.take()
        if (kind, value) == ("punct", "{"):
            return self.fields(closing="}")
        if (kind, value) == ("punct", "["):
            items: list[Any] = []
            while True:
                if self.peek() == ("punct", "]"):
                    self.take()
                    return items
                if self.peek() == ("punct", ","):
                    self.take()
                    continue
                items.append(self.value())
        if kind not in ("word", "string"):
            raise ValueError(f"HOCON: a value was expected, got {value!r}")
        words = [value]  # an unquoted value runs to the end of the line (`2MB`, `infinity`)
        while self.peek(skip_newlines=False)[0] == "word":
            words.append(self.take()[1])
        return " ".join(words)


def _merge(into: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        into = into.setdefault(key, {})
    last = path[-1]
    if isinstance(value, dict) and isinstance(into.get(last), dict):
        for key, item in value.items():
            _merge(into[last], [key], item)
    else:
        into[last] = value


def read_hocon(text: str) -> dict[str, Any]:
    return _Hocon(text).document()


def emqx_conf() -> dict[str, Any]:
    return read_hocon(EMQX_CONF.read_text(encoding="utf-8"))


def get(conf: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = conf
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


_SIZE = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def size_bytes(value: str) -> int:
    """`2MB` → 2097152: EMQX's byte sizes are powers of 1024."""
    found = re.fullmatch(r"(\d+)\s*([KMG]?B?)", value.strip())
    assert found, f"not a byte size: {value!r}"
    return int(found.group(1)) * _SIZE[found.group(2)]


def seconds(value: str) -> int:
    """`7d` → 604800 (a Mosquitto duration `1d` too)."""
    found = re.fullmatch(r"(\d+)([smhd])", value.strip())
    assert found, f"not a duration: {value!r}"
    return int(found.group(1)) * _DURATION[found.group(2)]


@dataclass(frozen=True)
class Listener:
    kind: str  # tcp, ssl, ws, wss
    name: str
    port: int
    zone: str
    settings: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


def listeners(conf: Mapping[str, Any]) -> list[Listener]:
    """The enabled MQTT listeners of an emqx.conf (EMQX adds tcp/ssl/ws/wss `default` ones
    when the file leaves them out: those count as enabled on their default ports)."""
    defaults = {"tcp": 1883, "ssl": 8883, "ws": 8083, "wss": 8084}
    found = []
    configured = get(conf, "listeners", {})
    for kind, default_port in defaults.items():
        by_name = dict(configured.get(kind, {}))
        by_name.setdefault("default", {})
        for name, settings in by_name.items():
            if str(settings.get("enable", "true")) == "false":
                continue
            bind = str(settings.get("bind", default_port))
            found.append(
                Listener(
                    kind,
                    name,
                    int(bind.rsplit(":", 1)[-1]),
                    settings.get("zone", "default"),
                    settings,
                )
            )
    return found


def authenticators(conf: Mapping[str, Any], listener: Listener) -> list[dict[str, Any]]:
    """A listener's authenticators: its own, else the global ones (EMQX's fallback)."""
    own = listener.settings.get("authentication")
    return list(own) if own else list(get(conf, "authentication", []))


def test_the_hocon_reader_reads_what_emqx_conf_uses() -> None:
    text = """
    # a comment
    a.b = 1
    a { c = "x # not a comment ${EMQX_ETC_DIR}/y", d: [1, 2,
        {e = f}] }  // another
    a.b = 2
    g { h = 2MB
        i = infinity }
    j.k.enable = false
    """
    assert read_hocon(text) == {
        "a": {"b": "2", "c": "x # not a comment ${EMQX_ETC_DIR}/y", "d": ["1", "2", {"e": "f"}]},
        "g": {"h": "2MB", "i": "infinity"},
        "j": {"k": {"enable": "false"}},
    }
    with pytest.raises(ValueError, match="expected"):
        read_hocon("a = ")
    assert (size_bytes("2MB"), size_bytes("128MB"), seconds("7d"), seconds("1m")) == (
        2 * 1024 * 1024,
        128 * 1024 * 1024,
        7 * 86400,
        60,
    )


# ----------------------------------------------------------------------------- Erlang terms

_TERM_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>%[^\n]*)|(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<quoted>'[^']*')|(?P<punct>[{}\[\],.])|(?P<atom>[a-z][A-Za-z0-9_@]*)|(?P<int>\d+)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Atom:
    name: str


def _term_tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TERM_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"acl.conf: cannot read {text[position : position + 20]!r}")
        position = match.end()
        if match.lastgroup not in ("space", "comment"):
            tokens.append((match.lastgroup or "", match.group(0)))
    return tokens


def read_terms(text: str) -> list[Any]:
    """The dot-terminated Erlang terms of a file: tuples as tuples, lists as lists, strings as
    str, atoms as :class:`Atom`, integers as int (what acl.conf uses)."""
    tokens = _term_tokens(text)
    at = 0

    def term() -> Any:
        nonlocal at
        kind, value = tokens[at]
        at += 1
        if value in ("{", "["):
            closing, items = ("}" if value == "{" else "]"), []
            while tokens[at][1] != closing:
                items.append(term())
                if tokens[at][1] == ",":
                    at += 1
            at += 1
            return tuple(items) if closing == "}" else items
        if kind == "string":
            return value[1:-1]
        if kind in ("atom", "quoted"):
            return Atom(value.strip("'"))
        if kind == "int":
            return int(value)
        raise ValueError(f"acl.conf: unexpected {value!r}")

    terms = []
    while at < len(tokens):
        terms.append(term())
        if tokens[at][1] != ".":
            raise ValueError(f"acl.conf: a rule must end with '.', got {tokens[at][1]!r}")
        at += 1
    return terms


def test_the_term_reader_reads_acl_conf_syntax() -> None:
    text = """%% comment
    {allow, {'and', [{username, "u"}, {client_attr, "trust", "private"}]}, all, ["a/#"]}.
    {deny, all, {publish, [{retain, true}, {qos, 1}]}, ["x/${username}"]}.
    {deny, all}."""
    assert read_terms(text) == [
        (
            Atom("allow"),
            (Atom("and"), [(Atom("username"), "u"), (Atom("client_attr"), "trust", "private")]),
            Atom("all"),
            ["a/#"],
        ),
        (
            Atom("deny"),
            Atom("all"),
            (Atom("publish"), [(Atom("retain"), Atom("true")), (Atom("qos"), 1)]),
            ["x/${username}"],
        ),
        (Atom("deny"), Atom("all")),
    ]
    with pytest.raises(ValueError, match="end with"):
        read_terms("{deny, all} {allow, all}.")


# ------------------------------------------------------------------------- topic matching


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT: does `topic_filter` (with `+` and `#`) match the topic name `topic`?"""
    words, levels = topic_filter.split("/"), topic.split("/")
    for index, word in enumerate(words):
        if word == "#":
            return True
        if index >= len(levels) or (word != "+" and word != levels[index]):
            return False
    return len(words) == len(levels)


def filter_within(subscribed: str, rule: str) -> bool:
    """EMQX's subscription check (`emqx_topic:match/2` on two filters): every topic the
    subscribed filter can match is matched by the rule's filter."""
    words, rule_words = subscribed.split("/"), rule.split("/")
    for index, rule_word in enumerate(rule_words):
        if rule_word == "#":
            return True
        if index >= len(words):
            return False
        word = words[index]
        if word == "#" or (rule_word != "+" and (word == "+" or word != rule_word)):
            return False
    return len(words) == len(rule_words)


def test_topic_matching_follows_mqtt() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert not topic_matches("a/+/c", "a/b/c/d")
    assert topic_matches("a/#", "a")
    assert topic_matches("a/#", "a/b/c")
    assert filter_within("a/b", "a/+")
    assert filter_within("a/+/c", "a/#")
    assert not filter_within("a/#", "a/b")
    assert not filter_within("a/+", "a/b")
    assert not filter_within("a", "a/+")


# --------------------------------------------------------------------------- EMQX's answer


@dataclass(frozen=True)
class Client:
    """A client as the authorizer sees it: its user name and the zone it came in through."""

    username: str
    trust: str  # the client attribute emqx.conf's zones set: private or public

    @property
    def listener(self) -> str:
        return self.trust


def _who_matches(who: Any, client: Client) -> bool:
    if who == Atom("all"):
        return True
    kind = who[0].name
    if kind in ("username", "user"):
        return client.username == who[1]
    if kind == "client_attr":
        return who[1] == "trust" and client.trust == who[2]
    if kind == "and":
        return all(_who_matches(part, client) for part in who[1])
    if kind == "or":
        return any(_who_matches(part, client) for part in who[1])
    raise AssertionError(f"acl.conf uses a condition this test does not model: {who!r}")


def _action_matches(action: Any, wanted: str, retain: bool) -> bool:
    if isinstance(action, Atom):
        return action.name in ("all", wanted)
    name, conditions = action[0].name, dict((c[0].name, c[1]) for c in action[1])
    if name not in ("all", wanted):
        return False
    flag = conditions.get("retain", Atom("all")).name
    return flag == "all" or (flag == "true") == retain


def _render(topic: str, client: Client) -> str:
    return topic.replace("${username}", client.username)


def emqx_allows(
    rules: list[Any], client: Client, action: str, topic: str, *, retain: bool = False
) -> bool:
    """EMQX's file authorizer: `action` is publish (a topic) or subscribe (a filter)."""
    if action == "subscribe":
        topic = re.sub(r"^\$share/[^/]+/", "", topic)
    for rule in rules:
        if len(rule) == 2:  # {allow | deny, all}
            return rule[0] == Atom("allow")
        permission, who, rule_action, topics = rule
        if not _who_matches(who, client) or not _action_matches(rule_action, action, retain):
            continue
        for rule_topic in topics:
            rendered = _render(rule_topic, client)
            if action == "subscribe" and filter_within(topic, rendered):
                return permission == Atom("allow")
            if action == "publish" and topic_matches(rendered, topic):
                return permission == Atom("allow")
    return False  # authorization.no_match = deny


def emqx_rules() -> list[Any]:
    return read_terms(EMQX_ACL.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------- Mosquitto's answer


@dataclass(frozen=True)
class MosquittoLine:
    """One `topic` or `pattern` line of a Mosquitto ACL file."""

    listener: str  # private (acl-private) or public (acl-public)
    user: str | None  # None: a pattern, for every user of the listener
    access: str  # read, write or readwrite
    topic: str  # with %u for patterns


def mosquitto_lines() -> list[MosquittoLine]:
    lines = []
    for listener in ("private", "public"):
        user: str | None = None
        for raw in (MOSQUITTO / f"acl-{listener}").read_text(encoding="utf-8").splitlines():
            words = raw.split()  # `#` starts a comment only at the start of a line
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "user":
                user = words[1]
            elif words[0] == "topic":
                access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
                lines.append(MosquittoLine(listener, user, access, topic))
            elif words[0] == "pattern":
                access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
                lines.append(MosquittoLine(listener, None, access, topic))
            else:
                raise AssertionError(f"acl-{listener}: a line this test does not model: {raw!r}")
    return lines


def mosquitto_allows(
    lines: Iterable[MosquittoLine], client: Client, action: str, topic: str
) -> bool:
    """Mosquitto 2.0's ACL file on the client's listener (`per_listener_settings true`): write
    for a publish, read for what a subscription receives; a `$share/<group>/` subscription is
    checked against the topic after the group. Checked on topic names only (what is delivered)."""
    wanted = "write" if action == "publish" else "read"
    topic = re.sub(r"^\$share/[^/]+/", "", topic)
    return any(
        line.listener == client.listener
        and (line.user is None or line.user == client.username)
        and line.access in (wanted, "readwrite")
        and topic_matches(line.topic.replace("%u", client.username), topic)
        for line in lines
    )


# --------------------------------------------------------------------------------- the tests

USERS = {  # the users of the two password files the tests make, and what each is
    "xiaozhi-edge": "private",
    "xiaozhi-hub": "private",
    "integrator": "public",
    "kitchen": "public",  # an MQTT device: user name = device id
}
_ACTION_OF = {"read": {"subscribe"}, "write": {"publish"}, "readwrite": {"publish", "subscribe"}}


def _rule_actions(action: Any) -> set[str]:
    name = action.name if isinstance(action, Atom) else action[0].name
    return {"publish", "subscribe"} if name == "all" else {name}


def test_every_mosquitto_acl_line_has_its_emqx_rule() -> None:
    """acl-private and acl-public line by line: the allow rule of acl.conf for the same user
    (or every user, for a pattern) on the same listener, action and topic (%u is ${username})."""
    rules = [r for r in emqx_rules() if len(r) == 4 and r[0] == Atom("allow")]
    missing = []
    for line in mosquitto_lines():
        topic = line.topic.replace("%u", "${username}")
        zone = (Atom("client_attr"), "trust", line.listener)
        who = zone if line.user is None else (Atom("and"), [(Atom("username"), line.user), zone])
        for action in _ACTION_OF[line.access]:
            if not any(
                rule_who == who and action in _rule_actions(act) and topic in topics
                for _, rule_who, act, topics in rules
            ):
                missing.append(f"acl-{line.listener}: {line.user or 'pattern'} {action} {topic}")
    assert not missing, "no rule in emqx/acl.conf for:\n" + "\n".join(missing)
    # And nothing allowed there that Mosquitto's files do not allow (checked by answers below).
    assert emqx_rules()[-1] == (Atom("deny"), Atom("all")), "acl.conf must end with {deny, all}."


def _probe_topics(lines: Iterable[MosquittoLine], users: Iterable[str]) -> set[str]:
    """Every topic the Mosquitto files name, for each user, with its wildcards filled in, and
    its neighbours: another device's id, one level deeper, one level up."""
    topics = set()
    for line, user in itertools.product(lines, users):
        for someone in (user, "hallway"):
            base = line.topic.replace("%u", someone)
            for filled in (base.replace("/#", "/a/b").replace("#", "a").replace("+", "x"),):
                topics |= {filled, f"{filled}/deeper", filled.rsplit("/", 1)[0]}
    return topics


def test_emqx_acl_answers_as_the_mosquitto_acl_files() -> None:
    """For every user on both listeners and every topic the files name (and neighbours),
    publishing (not retained) and subscribing to the exact topic are allowed by EMQX exactly
    when Mosquitto allows them."""
    lines, rules = mosquitto_lines(), emqx_rules()
    topics = _probe_topics(lines, USERS) | {"homeassistant/status", "zigbee2mqtt/x/set", "x"}
    differ = []
    for user, listener, topic, action in itertools.product(
        USERS, ("private", "public"), sorted(topics), ("publish", "subscribe")
    ):
        client = Client(user, listener)
        ours, theirs = (
            emqx_allows(rules, client, action, topic),
            mosquitto_allows(lines, client, action, topic),
        )
        if ours != theirs:
            differ.append(f"{user}@{listener} {action} {topic}: emqx {ours}, mosquitto {theirs}")
    assert len(topics) > 60, sorted(topics)
    assert not differ, "\n".join(differ)


def test_emqx_acl_agrees_with_the_documented_table() -> None:
    """The table of tests/test_compose.py (docs/operations.md §2), which the real Mosquitto
    passes: the same answers from acl.conf."""
    from tests.test_compose import ACL_DEVICE_READS, ACL_PUBLISH

    rules = emqx_rules()
    wrong = [
        f"{user} publish {topic}: {'refused' if allowed else 'allowed'}"
        for user, topic, allowed in ACL_PUBLISH
        if emqx_allows(rules, Client(user, USERS[user]), "publish", topic) != allowed
    ]
    wrong += [
        f"kitchen subscribe {topic}: {'refused' if allowed else 'allowed'}"
        for topic, allowed in ACL_DEVICE_READS
        if emqx_allows(rules, Client("kitchen", "public"), "subscribe", topic) != allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_shared_subscriptions_are_checked_on_the_topic_after_the_group() -> None:
    rules, hub, device = emqx_rules(), Client("xiaozhi-hub", "private"), Client("kitchen", "public")
    for filter_ in (
        "$share/hub/xiaozhi/events/voice_command",
        "$share/hub/xiaozhi/events/voice_command/+",
        "$share/hub/xiaozhi/commands/group/+",
        "$share/hub/xiaozhi/commands/+",
        "$share/speech/xiaozhi/utterances/+",
    ):
        assert emqx_allows(rules, hub, "subscribe", filter_), filter_
        assert not emqx_allows(rules, device, "subscribe", filter_), filter_


def test_what_emqx_refuses_beyond_mosquitto_is_what_operations_md_lists() -> None:
    """Differences by design (docs/operations.md §10): a wildcard subscription wider than a
    device's rights is refused whole, and a public client's retained event, voice command or
    command is dropped. Each is checked here, so that a change shows."""
    rules, lines = emqx_rules(), mosquitto_lines()
    device, integrator = Client("kitchen", "public"), Client("integrator", "public")
    for filter_ in ("xiaozhi/commands/#", "xiaozhi/commands/+"):
        assert not emqx_allows(rules, device, "subscribe", filter_)
    for client, topic in (
        (device, "xiaozhi/events/voice_command/kitchen"),
        (device, "xiaozhi/events/kitchen"),
        (integrator, "xiaozhi/commands/kitchen"),
        (integrator, "xiaozhi/commands/group/downstairs"),
    ):
        assert mosquitto_allows(lines, client, "publish", topic), topic
        assert emqx_allows(rules, client, "publish", topic), topic
        assert not emqx_allows(rules, client, "publish", topic, retain=True), topic
    for topic in ("xiaozhi/status/kitchen", "xiaozhi/sensors/kitchen/temperature"):
        # Statuses and sensor readings are retained by design.
        assert emqx_allows(rules, device, "publish", topic, retain=True), topic
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "refused whole" in text
    assert "retain flag" in text


# ------------------------------------------------------------------------- listeners, users


def _mosquitto_listeners() -> dict[int, dict[str, str]]:
    """production.conf's listeners: port → its options (per_listener_settings true)."""
    found: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in (MOSQUITTO / "production.conf").read_text(encoding="utf-8").splitlines():
        words = raw.split("#", 1)[0].split(None, 1)
        if not words:
            continue
        if words[0] == "listener":
            current = found.setdefault(int(words[1].split()[0]), {})
        elif current is not None:
            current[words[0]] = words[1].strip() if len(words) > 1 else ""
    return found


def test_emqx_listeners_are_production_conf_ones_with_their_own_users() -> None:
    conf = emqx_conf()
    ours = {listener.port: listener for listener in listeners(conf)}
    theirs = _mosquitto_listeners()
    assert set(ours) == set(theirs), (
        f"EMQX listens on {sorted(ours)}, production.conf {sorted(theirs)}"
    )
    problems = []
    for port, options in theirs.items():
        listener = ours[port]
        trust = "public" if options["acl_file"].endswith("acl-public") else "private"
        if listener.zone != trust:
            problems.append(f"{port}: zone {listener.zone}, production.conf's ACL is {trust}")
        if ("certfile" in options) != (listener.kind == "ssl"):
            problems.append(
                f"{port}: TLS {listener.kind == 'ssl'}, production.conf {'certfile' in options}"
            )
        username_is_id = get(conf, f"zones.{listener.zone}.mqtt.use_username_as_clientid", "false")
        if (username_is_id == "true") != (options.get("use_username_as_clientid") == "true"):
            problems.append(f"{port}: use_username_as_clientid {username_is_id}")
        attrs = get(conf, f"zones.{listener.zone}.mqtt.client_attrs_init", [])
        if attrs != [{"expression": f"concat(['{trust}'])", "set_as_attr": "trust"}]:
            problems.append(f"{port}: zone {listener.zone} does not set trust = {trust}: {attrs}")
        # Private listeners: an authenticator of their own. The public one: the global one,
        # whose users the dashboard and REST API manage.
        authn = authenticators(conf, listener)
        own = "authentication" in listener.settings
        if own != (trust == "private"):
            problems.append(f"{port}: own authenticator {own}, for a {trust} listener")
        if len(authn) != 1 or authn[0].get("backend") != "built_in_database":
            problems.append(f"{port}: not one built-in database authenticator: {authn}")
            continue
        bootstrap = authn[0].get("bootstrap_file", "")
        if bootstrap != f"{EMQX_ETC}/xiaozhi/users-{trust}.csv":
            problems.append(f"{port}: users from {bootstrap}, expected users-{trust}.csv")
        if authn[0].get("user_id_type", "username") != "username":
            problems.append(f"{port}: user ids are {authn[0]['user_id_type']}, not user names")
    assert not problems, "\n".join(problems)


def test_authorization_is_acl_conf_and_refuses_what_it_does_not_match() -> None:
    conf = emqx_conf()
    assert get(conf, "authorization.no_match") == "deny"
    sources = get(conf, "authorization.sources")
    assert [s["type"] for s in sources] == ["file"], sources
    assert sources[0]["path"] == f"{EMQX_ETC}/xiaozhi/acl.conf"


def test_emqx_keeps_the_measured_settings_of_mosquitto() -> None:
    """Each of dev.conf's measured options (tests/test_compose.py) and production.conf's session
    expiry has its EMQX counterpart; an option added there fails here until it has one."""
    from tests.test_compose import MEASURED_BROKER_OPTIONS, mosquitto_options

    conf = emqx_conf()
    production = mosquitto_options(MOSQUITTO / "production.conf")

    def one(option: str) -> str:
        return production[option][-1]

    tcp_nodelay = [
        listener.settings.get("tcp_options", {}).get("nodelay", "true")
        for listener in listeners(conf)
    ]
    heap = size_bytes(get(conf, "force_shutdown.max_heap_size"))
    on_disc = get(conf, "retainer.backend.storage_type") == "disc"
    counterparts = {
        "max_queued_messages": get(conf, "mqtt.max_mqueue_len") == one("max_queued_messages"),
        "queue_qos0_messages": get(conf, "mqtt.mqueue_store_qos0") == one("queue_qos0_messages"),
        "max_packet_size": size_bytes(get(conf, "mqtt.max_packet_size"))
        == int(one("max_packet_size")),
        # EMQX has no byte bound on a queue: a client process past max_heap_size is shut down.
        "max_queued_bytes": heap >= int(one("max_queued_bytes")),
        # EMQX sets TCP_NODELAY unless told not to.
        "set_tcp_nodelay": set(tcp_nodelay) == {one("set_tcp_nodelay")},
        # Retained messages on disc (Mnesia writes each at once: no autosave interval).
        "persistence": on_disc,
        "autosave_interval": on_disc,
    }
    assert set(counterparts) == set(MEASURED_BROKER_OPTIONS), set(MEASURED_BROKER_OPTIONS) ^ set(
        counterparts
    )
    wrong = [option for option, holds in counterparts.items() if not holds]
    assert not wrong, f"emqx.conf differs from production.conf on {wrong}"
    assert seconds(get(conf, "mqtt.session_expiry_interval")) == seconds(
        one("persistent_client_expiration")
    )
    # Retained statuses must be stored however fast a fleet publishes them, and as large as
    # any message the broker takes.
    assert get(conf, "retainer.max_publish_rate") == "infinity"
    assert size_bytes(get(conf, "retainer.max_payload_size")) == int(one("max_packet_size"))
    assert get(conf, "retainer.backend.max_retained_messages") == "0"


def test_shared_subscriptions_spread_whole_messages_over_every_member() -> None:
    """Hub replicas and speech workers take any message of their group: a strategy that
    sends a group's stream to one member (sticky), prefers the publisher's node (local) or
    hashes would leave members idle."""
    strategy = get(emqx_conf(), "mqtt.shared_subscription_strategy")
    assert strategy in ("round_robin", "round_robin_per_group", "random"), strategy


def test_durable_sessions_stay_off_on_an_open_source_cluster() -> None:
    # EMQX 5.8 refuses durable sessions on builtin_local storage unless discovery is singleton.
    conf = emqx_conf()
    assert get(conf, "durable_sessions.enable") == "false"
    assert get(conf, "cluster.discovery_strategy") == "static"
