# sluice-world: serde  (read by scripts/build-plugins and scripts/test-plugins)
"""kv-py: a `key=value` codec (SerDe) for Sluice, written in Python.

It proves that a plugin can be written in any language that builds a WebAssembly component
for the `serde` world of `wit/` (package sluice:plugin@0.1.0); componentize-py builds it
(scripts/build-plugins does):

    componentize-py -d ../../wit -w serde componentize --stub-wasi app -o kv-py.wasm

`--stub-wasi` leaves the component no imports but `sluice:plugin/host`, as the agent's sandbox
wants; a WASI call (`print`, `open`, `time.time`) then traps, so log through `host.log`.

Config (the plugin's `config:` in the pipeline file, all optional):

    plugins:
      kv:
        path: kv-py.wasm
        config:
          headers: [level]   # keys also copied into each event's headers

Format: one event per non-empty line; a line is `key=value` pairs separated by spaces or
tabs. A value may be double-quoted to hold spaces, `=` or quotes (`msg="a \\"b\\" c"`,
backslash escapes `\\"` and `\\\\`). Keys are non-empty and hold no space, `=` or quote.

- decode: each line becomes an event whose body is the JSON object of its pairs, in order
  (values are strings; a repeated key keeps its last value). A malformed line fails the whole
  payload, naming the line.
- encode: each event's body must be a JSON object; it becomes one line. Strings are written
  as they are (quoted when needed), numbers as written, `null` as an empty value, other
  values as compact JSON.
"""

import json
from decimal import Decimal

from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import host
from wit_world.imports.types import Event, PluginInfo

NAME = "kv-py"
VERSION = "0.1.0"


class KvError(ValueError):
    pass


def parse_line(line: str) -> dict:
    """`a=1 msg="x y"` -> {"a": "1", "msg": "x y"}."""
    pairs = {}
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and line[i] not in ' \t="':
            i += 1
        key = line[start:i]
        if not key or i >= n or line[i] != "=":
            end = i
            while end < n and line[end] not in " \t":
                end += 1
            raise KvError(f"`{line[start:end] or line[start]}` is not key=value")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            out = []
            while True:
                if i >= n:
                    raise KvError(f"unterminated quote in the value of `{key}`")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    out.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            if i < n and line[i] not in " \t":
                raise KvError(f"text right after the closing quote of `{key}`")
            value = "".join(out)
        else:
            start = i
            while i < n and line[i] not in " \t":
                i += 1
            value = line[start:i]
            if '"' in value:
                raise KvError(f"stray quote in the value of `{key}`")
        pairs[key] = value


def value_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return str(value)  # the number as written: 1.10 stays 1.10
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=float)


def format_value(text: str) -> str:
    if text and not any(c in text for c in ' \t="\\\r\n'):
        return text
    if "\n" in text or "\r" in text:
        raise KvError("a value holds a line break, which kv lines cannot carry")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(obj: dict) -> str:
    parts = []
    for key, value in obj.items():
        if not key or any(c in key for c in ' \t="\r\n'):
            raise KvError(f"key {key!r} cannot be written as kv")
        parts.append(f"{key}={format_value(value_text(value))}")
    return " ".join(parts)


class Codec:
    """The codec's logic, free of the component bindings (so it is tested natively)."""

    def __init__(self, config: dict):
        if not isinstance(config, dict):
            raise KvError("config must be a mapping")
        unknown = sorted(set(config) - {"headers"})
        if unknown:
            raise KvError(f"unknown config key `{unknown[0]}` (expected `headers`)")
        headers = config.get("headers", [])
        if not isinstance(headers, list) or not all(isinstance(h, str) and h for h in headers):
            raise KvError("`headers` must be a list of key names")
        self.headers = headers

    def decode(self, payload: bytes) -> list:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise KvError(f"payload is not UTF-8: {e}") from None
        events = []
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            try:
                pairs = parse_line(line)
            except KvError as e:
                raise KvError(f"line {number}: {e}") from None
            headers = [(h, pairs[h]) for h in self.headers if h in pairs]
            body = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()
            events.append(Event(headers=headers, body=body))
        return events

    def encode(self, events: list) -> bytes:
        lines = []
        for i, event in enumerate(events):
            try:
                obj = json.loads(event.body, parse_float=Decimal)
            except (ValueError, UnicodeDecodeError) as e:
                raise KvError(f"event {i}: body is not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise KvError(f"event {i}: body is not a JSON object")
            try:
                lines.append(format_line(obj) + "\n")
            except KvError as e:
                raise KvError(f"event {i}: {e}") from None
        return "".join(lines).encode()


_codec = None


def _get() -> Codec:
    if _codec is None:
        raise Err(f"{NAME}: not initialised")
    return _codec


class WitWorld(_World):
    """The component's exports; `KvError` becomes the `err` of the WIT result."""

    def init(self, config: str) -> PluginInfo:
        global _codec
        try:
            _codec = Codec(json.loads(config) if config.strip() else {})
        except (KvError, ValueError) as e:
            raise Err(f"{NAME}: invalid config: {e}")
        host.log(host.Level.DEBUG, f"{NAME} {VERSION} ready, headers={_codec.headers}")
        return PluginInfo(name=NAME, version=VERSION)

    def decode(self, payload: bytes, content_type: str) -> list:
        try:
            events = _get().decode(payload)
        except KvError as e:
            raise Err(f"{NAME}: {e}")
        host.counter_add("decoded_events", len(events))
        return events

    def encode(self, events: list) -> bytes:
        try:
            return _get().encode(events)
        except KvError as e:
            raise Err(f"{NAME}: {e}")
