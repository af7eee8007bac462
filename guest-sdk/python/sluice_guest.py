"""sluice_guest: write Sluice plugins in Python (one module, no dependencies).

A plugin is a WebAssembly component built by componentize-py for one world of the
`sluice:plugin@0.1.0` WIT package. This module hides the generated bindings: a decorator on a
plain function (or class) builds the world's exports and sets them as `WitWorld` on the
plugin's module, which is where componentize-py looks for them.

    import sluice_guest as sg
    from dataclasses import dataclass

    @dataclass
    class Config:
        header: str = "region"
        value: str = "eu"

    @sg.interceptor(name="tag", config=Config)
    def tag(event, config):
        if not event.body:
            return sg.reject("empty body")
        event.set_header(config.header, config.value)
        return event                      # keep it (with the change)

Build: `componentize-py -d wit -w packed-interceptor componentize --stub-wasi app -o tag.wasm`.

Forms (each takes `name=`, `version=`, `config=` a dataclass, `init=` a setup function):

- `@interceptor` on `f(event, config) -> verdict` (world `packed-interceptor`). A verdict is
  the event itself (or `keep(event)`), `drop()`, `reject(reason)`, `retry(reason)` or
  `split([events])`. Only what changed crosses the boundary back to the host.
- `@serde` on a class with `decode(self, payload, content_type) -> [Event]` and
  `encode(self, events) -> bytes`, made once at init as `cls(config)` (world `serde`;
  subclass `Codec` for a ready `__init__` that keeps `self.config`).
- `@selector` on `f(events, channels, config) -> [route]`, one `route(required, optional)` per
  event; channels by index or by name (world `route-selector`: the selector role with its
  export named `select-routes`, which componentize-py can build; see `wit/selector.wit`).

The plugin's `config:` mapping is read into the `config=` dataclass: unknown keys, missing
required keys and values of the wrong type refuse the plugin at init, with the reason.
Without `config=`, the function gets the mapping as a dict.

`log.info(...)` (and trace, debug, warn, error) and `counter(name, delta=1)` reach the agent.
In a component `print()` works: stdout lines become info log lines, stderr lines warn lines.
An exception raised by the plugin fails the call with its type, message and line (raise
`Error("...")` for a message of your own).

Natively (no component bindings: plain `python -m unittest`) the module still imports;
`sluice_guest.testing` runs plugin functions on sample events through the same packed
encoding the component uses, and records log lines and counters.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import sys
import typing

__version__ = "0.1.0"

__all__ = [
    "Event", "Verdict", "Route", "Codec", "Error",
    "interceptor", "serde", "selector",
    "keep", "drop", "reject", "retry", "split", "route", "DROP",
    "log", "counter", "testing", "parse_config", "world", "IN_COMPONENT",
]

# --------------------------------------------------------------------------------------------
# The host: the component's imports, or native stand-ins
# --------------------------------------------------------------------------------------------

try:  # only importable inside a component built by componentize-py (and while it builds)
    import componentize_py_runtime  # noqa: F401

    IN_COMPONENT = True
except ImportError:
    IN_COMPONENT = False

if IN_COMPONENT:
    from componentize_py_types import Err as _Err
    from wit_world.imports import host as _host
    from wit_world.imports import types as _wit_types

    _LEVELS = {
        "trace": _host.Level.TRACE, "debug": _host.Level.DEBUG, "info": _host.Level.INFO,
        "warn": _host.Level.WARN, "error": _host.Level.ERROR,
    }
    _host_log = _host.log
    _host_counter = _host.counter_add
else:
    try:  # the generated bindings may be on the path (`componentize-py bindings`)
        from componentize_py_types import Err as _Err
    except ImportError:
        class _Err(Exception):
            """Stands for componentize_py_types.Err natively: a WIT `result`'s error."""

            def __init__(self, value):
                super().__init__(value)
                self.value = value
    _wit_types = None
    _LEVELS = {k: k for k in ("trace", "debug", "info", "warn", "error")}

    def _host_log(level, message):
        testing.logs.append((level, message))

    def _host_counter(name, delta):
        testing.counters[name] = testing.counters.get(name, 0) + delta


class Error(Exception):
    """A plugin error whose message is reported as it is (to the log, or as a reason)."""


class _Log:
    """`log.info("...")`: a line in the agent's log, tagged with the plugin's name."""

    __slots__ = ()

    def trace(self, msg):
        _host_log(_LEVELS["trace"], str(msg))

    def debug(self, msg):
        _host_log(_LEVELS["debug"], str(msg))

    def info(self, msg):
        _host_log(_LEVELS["info"], str(msg))

    def warn(self, msg):
        _host_log(_LEVELS["warn"], str(msg))

    warning = warn

    def error(self, msg):
        _host_log(_LEVELS["error"], str(msg))

    def __call__(self, level, msg):
        _host_log(_LEVELS[level], str(msg))


log = _Log()

# Counters are summed during a call and sent once per name when it ends: one host call per
# batch instead of one per event.
_counts: dict = {}


def counter(name: str, delta: int = 1) -> None:
    """Adds `delta` to the plugin counter `name` (sluice_plugin_counter_total{plugin, name})."""
    _counts[name] = _counts.get(name, 0) + delta


def _flush_counters():
    if _counts:
        items = list(_counts.items())
        _counts.clear()
        for name, delta in items:
            if delta:
                _host_counter(name, int(delta))


class _LineWriter(io.TextIOBase):
    """`sys.stdout`/`sys.stderr` in a component: each line becomes one host log line."""

    def __init__(self, level, name):
        super().__init__()
        self._level = level
        self._name = name
        self._parts = []
        self.live = False  # set once the host is reachable (the first export call)

    @property
    def encoding(self):
        return "utf-8"

    @property
    def name(self):
        return self._name

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if "\n" in s:
            lines = s.split("\n")
            if self._parts:
                self._parts.append(lines[0])
                lines[0] = "".join(self._parts)
                self._parts.clear()
            last = lines.pop()
            if self.live:
                for line in lines:
                    _host_log(self._level, line)
            else:  # at build time (module level) there is no host: keep them for init
                self._parts.extend(line + "\n" for line in lines)
            if last:
                self._parts.append(last)
        elif s:
            self._parts.append(s)
        return len(s)

    def flush(self):
        if self._parts and self.live:
            text = "".join(self._parts)
            self._parts.clear()
            if text.endswith("\n"):
                text = text[:-1]
            for line in text.split("\n"):
                _host_log(self._level, line)
        return None


class _Flushing:
    """Makes the host reachable for print during an export call; flushes at its end."""

    __slots__ = ()

    def __enter__(self):
        if _stdout is not None:
            _stdout.live = _stderr.live = True
            if _stdout._parts or _stderr._parts:
                _drain_early_output()
        return self

    def __exit__(self, *exc):
        if _stdout is not None:
            if _stdout._parts:
                _stdout.flush()
            if _stderr._parts:
                _stderr.flush()
        if _counts:
            _flush_counters()
        return False


def _drain_early_output():
    for w in (_stdout, _stderr):
        text = "".join(w._parts)
        w._parts.clear()
        if text.endswith("\n"):
            text = text[:-1]
        if text:
            for line in text.split("\n"):
                _host_log(w._level, line)


_stdout = _stderr = None
if IN_COMPONENT:
    # With --stub-wasi every WASI call traps, so the interpreter's own stdout would make
    # print() fail the call.
    _stdout = _LineWriter(_LEVELS["info"], "<stdout>")
    _stderr = _LineWriter(_LEVELS["warn"], "<stderr>")
    sys.stdout = _stdout
    sys.stderr = _stderr
_CALL = _Flushing()


def _describe(e: BaseException) -> str:
    """`ValueError: bad thing (app.py:12 in f)`; an `Error` is its message alone."""
    if isinstance(e, Error):
        return str(e)
    where = ""
    tb = e.__traceback__
    if tb is not None:
        # Walked by hand: traceback.extract_tb reads source lines (linecache -> os.stat),
        # a WASI call, which traps under --stub-wasi.
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        where = f" ({code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name})"
    msg = str(e)
    return f"{type(e).__name__}: {msg}{where}" if msg else f"{type(e).__name__}{where}"


# --------------------------------------------------------------------------------------------
# Packed layout (wit/PACKED.md)
# --------------------------------------------------------------------------------------------

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_HI = struct.Struct("<HI")
_u16_from = _U16.unpack_from
_u32_from = _U32.unpack_from
_p16 = _U16.pack
_p32 = _U32.pack

OP_SET = 0
OP_REMOVE = 1


def _str_bytes(s, what) -> bytes:
    if isinstance(s, str):
        b = s.encode("utf-8")
    elif isinstance(s, (bytes, bytearray, memoryview)):
        b = bytes(s)
        b.decode("utf-8")  # headers are strings for the host
    else:
        raise TypeError(f"{what} must be a str, not {type(s).__name__}")
    return _p32(len(b)) + b


def _body_bytes(b) -> bytes:
    if isinstance(b, bytes):
        return b
    if isinstance(b, str):
        return b.encode("utf-8")
    if isinstance(b, (bytearray, memoryview)):
        return bytes(b)
    raise TypeError(f"an event body must be bytes or str, not {type(b).__name__}")


# Decoded header blocks, by their bytes: events of a batch mostly share them.
_HEADER_BLOCKS: dict = {}


def _decode_block(hb: bytes):
    got = _HEADER_BLOCKS.get(hb)
    if got is None:
        (n,) = _u16_from(hb, 0)
        p = 2
        pairs = []
        for _ in range(n):
            (k,) = _u32_from(hb, p)
            name = hb[p + 4:p + 4 + k].decode("utf-8", "replace")
            p += 4 + k
            (v,) = _u32_from(hb, p)
            value = hb[p + 4:p + 4 + v].decode("utf-8", "replace")
            p += 4 + v
            pairs.append((name, value))
        got = (tuple(pairs), dict(pairs))
        if len(_HEADER_BLOCKS) >= 4096:
            _HEADER_BLOCKS.clear()
        _HEADER_BLOCKS[hb] = got
    return got


# Encoded patch verdicts (tag 1, the op list, "body unchanged"), by their op tuple: a plugin
# setting the same header on every event encodes it once.
_PATCHES: dict = {}


def _patch_bytes(ops: tuple) -> bytes:
    got = _PATCHES.get(ops)
    if got is None:
        parts = [b"\x01", _p16(len(ops))]
        for name, value in ops:
            if value is None:
                parts += (b"\x01", _str_bytes(name, "a header name"))
            else:
                parts += (b"\x00", _str_bytes(name, "a header name"), _str_bytes(value, "a header value"))
        parts.append(b"\x00")
        got = b"".join(parts)
        if len(_PATCHES) >= 4096:
            _PATCHES.clear()
        _PATCHES[ops] = got
    return got


def _apply_ops(pairs, ops):
    """The headers after `ops`, applied as the host applies a patch."""
    out = list(pairs)
    for name, value in ops:
        for i, (k, _) in enumerate(out):
            if k == name:
                if value is None:
                    del out[i]
                else:
                    out[i] = (name, value)
                break
        else:
            if value is not None:
                out.append((name, value))
    return out


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

class Event:
    """One event: headers (unique names, in order) and a body (bytes).

    `Event(body, headers)` makes a new one (for `split`, or a codec's `decode`); `body` may be
    str (UTF-8) and `headers` a dict or a list of pairs.
    """

    __slots__ = ("_h", "body")

    def __init__(self, body=b"", headers=None):
        self.body = _body_bytes(body)
        if headers is None:
            self._h = []
        else:
            items = headers.items() if isinstance(headers, dict) else headers
            self._h = []
            for k, v in items:
                self.set_header(k, v)

    # `body` (bytes; a str assigned to it is sent as UTF-8) is a plain attribute: reading it
    # is the cheapest thing a plugin does per event.

    def set_body(self, value) -> "Event":
        self.body = value
        return self

    @property
    def text(self) -> str:
        """The body as UTF-8 text (invalid bytes replaced)."""
        return _body_bytes(self.body).decode("utf-8", "replace")

    @text.setter
    def text(self, value: str):
        self.body = value.encode("utf-8")

    def json(self):
        """The body parsed as JSON."""
        return json.loads(_body_bytes(self.body))

    @property
    def headers(self) -> list:
        """The headers as a list of `(name, value)` pairs, in order (a copy)."""
        return list(self._h)

    def header(self, name: str, default=None):
        for k, v in self._h:
            if k == name:
                return v
        return default

    def set_header(self, name: str, value: str) -> "Event":
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("header names and values are str")
        h = self._h
        for i, (k, _) in enumerate(h):
            if k == name:
                h[i] = (name, value)
                return self
        h.append((name, value))
        return self

    def remove_header(self, name: str):
        """Removes a header; returns its value (None when it was not set)."""
        h = self._h
        for i, (k, v) in enumerate(h):
            if k == name:
                del h[i]
                return v
        return None

    @property
    def changed(self) -> bool:
        """False only for an event received from the host and not modified."""
        return True

    def _full(self) -> bytes:
        """The event in the packed input layout."""
        pairs = self.headers
        parts = [_p16(len(pairs))]
        for k, v in pairs:
            parts += (_str_bytes(k, "a header name"), _str_bytes(v, "a header value"))
        body = _body_bytes(self.body)
        parts += (_p32(len(body)), body)
        return b"".join(parts)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        return _body_bytes(self.body) == _body_bytes(other.body) and self.headers == other.headers

    __hash__ = None

    def __repr__(self):
        body = _body_bytes(self.body)
        shown = body[:200].decode("utf-8", "replace") + ("…" if len(body) > 200 else "")
        return f"Event(headers={self.headers!r}, body={shown!r})"


class _Received(Event):
    """An event as the host sent it, plus the changes made. Its headers stay packed until
    read (decoded once per distinct header block); its body is the batch's bytes."""

    __slots__ = ("_hb", "_ob", "_ops")

    def __init__(self, hb, body):
        self._hb = hb      # the header block (u16 count + pairs), shared by equal events
        self.body = body
        self._ob = body    # the body as received: a body assigned since is sent back
        self._ops = ()     # header changes: (name, value) sets, (name, None) removes

    @property
    def headers(self) -> list:
        pairs = _decode_block(self._hb)[0]
        return _apply_ops(pairs, self._ops) if self._ops else list(pairs)

    def header(self, name: str, default=None):
        ops = self._ops
        if ops:
            for i in range(len(ops) - 1, -1, -1):
                if ops[i][0] == name:
                    v = ops[i][1]
                    return default if v is None else v
        return _decode_block(self._hb)[1].get(name, default)

    def set_header(self, name: str, value: str) -> "Event":
        self._ops += ((name, value),)
        return self

    def remove_header(self, name: str):
        old = self.header(name)
        if old is not None:
            self._ops += ((name, None),)
        return old

    @property
    def changed(self) -> bool:
        return bool(self._ops) or self.body is not self._ob

    def _verdict(self) -> bytes:
        """Keeping this event: the cheapest packed verdict for what changed."""
        ops = self._ops
        if self.body is self._ob:
            return _patch_bytes(ops) if ops else b"\x00"
        if len(ops) > 0xFFFF:
            return b"\x02" + self._full()
        body = _body_bytes(self.body)
        return b"".join((_patch_bytes(ops)[:-1], b"\x01", _p32(len(body)), body))


# --------------------------------------------------------------------------------------------
# Verdicts and routes
# --------------------------------------------------------------------------------------------

class Verdict:
    """What an interceptor decided: `kind` is keep, drop, reject, retry or split."""

    __slots__ = ("kind", "event", "reason", "events")

    def __init__(self, kind, event=None, reason=None, events=None):
        self.kind = kind
        self.event = event
        self.reason = reason
        self.events = events

    def __eq__(self, other):
        if isinstance(other, Event):  # keep(e) is e itself
            return self.kind == "keep" and self.event == other
        if not isinstance(other, Verdict):
            return NotImplemented
        return (self.kind, self.event, self.reason, self.events) == (
            other.kind, other.event, other.reason, other.events)

    __hash__ = None

    def __repr__(self):
        if self.kind == "keep":
            return f"keep({self.event!r})"
        if self.kind == "drop":
            return "drop()"
        if self.kind == "split":
            return f"split({self.events!r})"
        return f"{self.kind}({self.reason!r})"


DROP = Verdict("drop")
_DROP_TAG = b"\x03"


def keep(event: Event) -> Event:
    """Keep the event (possibly modified): the same as returning it."""
    return event


def drop() -> Verdict:
    """Discard the event on purpose (counted as dropped)."""
    return DROP


def reject(reason: str) -> Verdict:
    """Poison: the host sends the event, unchanged, to the dead-letter channel."""
    return Verdict("reject", reason=str(reason))


def retry(reason: str) -> Verdict:
    """Cannot handle it now: the host fails the whole batch and the source retries it."""
    return Verdict("retry", reason=str(reason))


def split(events) -> Verdict:
    """Replace the event by these events (Event, bytes or str each; may be empty)."""
    return Verdict("split", events=[e if isinstance(e, Event) else Event(e) for e in events])


def _encode_verdict(v, ev) -> bytes:
    """Any verdict but keeping the received event `ev` itself (handled inline)."""
    if isinstance(v, Verdict):
        kind = v.kind
        if kind == "drop":
            return _DROP_TAG
        if kind == "reject":
            return b"\x04" + _str_bytes(v.reason, "a reason")
        if kind == "retry":
            return b"\x05" + _str_bytes(v.reason, "a reason")
        if kind == "split":
            return b"".join([b"\x06", _p32(len(v.events))] + [e._full() for e in v.events])
        if kind == "keep":
            v = v.event
    if v is ev:
        return ev._verdict()
    if isinstance(v, Event):
        return b"\x02" + v._full()
    if v is None:
        raise TypeError("the interceptor returned None: return the event (keep), drop(), "
                        "reject(reason), retry(reason) or split([...])")
    raise TypeError(f"the interceptor returned {type(v).__name__}, not a verdict")


class Route:
    """Where one event goes: channels `required` and `optional` (indices or names)."""

    __slots__ = ("required", "optional")

    def __init__(self, required=(), optional=()):
        self.required = list(required)
        self.optional = list(optional)

    def __eq__(self, other):
        if not isinstance(other, Route):
            return NotImplemented
        return (self.required, self.optional) == (other.required, other.optional)

    __hash__ = None

    def __repr__(self):
        return f"route(required={self.required!r}, optional={self.optional!r})"


def route(required=(), optional=()) -> Route:
    """`route(0)`, `route([0, 2], optional=["audit"])`: channels by index or by name."""
    if isinstance(required, (int, str)):
        required = [required]
    if isinstance(optional, (int, str)):
        optional = [optional]
    return Route(required, optional)


# --------------------------------------------------------------------------------------------
# Typed config
# --------------------------------------------------------------------------------------------

_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
          list: "a list", dict: "a mapping", type(None): "null"}


def _what(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _KINDS.get(type(value), type(value).__name__)


def _convert(value, tp, path):
    """Checks (and converts) one JSON value against a type annotation; `path` names it."""
    where = f"`{path}`"
    if tp is typing.Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        errors = []
        for a in args:
            try:
                return _convert(value, a, path)
            except ValueError as e:
                errors.append(e)
        names = " or ".join(_type_name(a) for a in args)
        raise ValueError(f"{where}: expected {names}, got {_what(value)}")
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise ValueError(f"{where}: expected null, got {_what(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_what(value)}")
        return _build(tp, value, path + ".")
    base = origin or tp
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif base is str:
        ok = isinstance(value, str)
    elif base in (list, tuple, set, frozenset) or base is typing.List:
        ok = isinstance(value, list)
        if ok and args and args[0] is not Ellipsis:
            value = [_convert(x, args[0], f"{path}[{i}]") for i, x in enumerate(value)]
        if ok and base in (tuple, set, frozenset):
            value = base(value)
    elif base is dict:
        ok = isinstance(value, dict)
        if ok and len(args) == 2:
            value = {k: _convert(x, args[1], f"{path}.{k}") for k, x in value.items()}
    else:
        return value  # a type this checker does not know: passed as it is
    if not ok:
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {_what(value)}")
    return value


def _type_name(tp) -> str:
    base = typing.get_origin(tp) or tp
    if base in (tuple, set, frozenset):
        base = list
    return _KINDS.get(base, getattr(tp, "__name__", str(tp)))


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    unknown = [k for k in data if k not in names]
    if unknown:
        expected = ", ".join(f"`{n}`" for n in names) or "none"
        raise ValueError(f"unknown config key `{prefix}{unknown[0]}` (expected: {expected})")
    values = {}
    for f in fields:
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints.get(f.name, typing.Any), prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing config key `{prefix}{f.name}`")
    return cls(**values)


def parse_config(cls, text):
    """The plugin's config JSON (a str, or an already parsed mapping) as an instance of the
    dataclass `cls` (`cls` None: the mapping itself). Raises ValueError with the reason."""
    if isinstance(text, (str, bytes)):
        if not text.strip():
            data = {}
        else:
            try:
                data = json.loads(text)
            except ValueError as e:
                raise ValueError(f"config is not JSON: {e}") from None
    else:
        data = text
    if data is None:
        data = {}
    if cls is None:
        return data
    if dataclasses.is_dataclass(cls) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config must be a mapping, got {_what(data)}")
    if not dataclasses.is_dataclass(cls):
        return cls(**data)
    try:
        return _build(cls, data)
    except ValueError:
        raise
    except TypeError as e:  # from the dataclass itself (__post_init__)
        raise ValueError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Plugins and worlds
# --------------------------------------------------------------------------------------------

class PluginInfo:
    """What `init` answers natively (the component answers the WIT record)."""

    def __init__(self, name, version):
        self.name, self.version = name, version

    def __repr__(self):
        return f"PluginInfo(name={self.name!r}, version={self.version!r})"


def _info(name, version):
    if _wit_types is not None:
        return _wit_types.PluginInfo(name=name, version=version)
    return PluginInfo(name, version)


class _Plugin:
    world = ""

    def __init__(self, target, name, version, config, init):
        self.target = target
        self.name = name or getattr(target, "__name__", "plugin").replace("_", "-")
        self.version = version
        self.config_cls = config
        self.init_hook = init
        self.config = None
        self.ready = False

    def fail(self, msg):
        raise _Err(f"{self.name}: {msg}")

    def read_config(self, text):
        try:
            return parse_config(self.config_cls, text)
        except ValueError as e:
            self.fail(f"invalid config: {e}")
        except Exception as e:
            self.fail(f"invalid config: {_describe(e)}")

    def do_init(self, config_text, *before):
        config = self.read_config(config_text)
        try:
            self.setup(config, *before)
        except _Err:
            raise
        except Exception as e:
            self.fail(f"init failed: {_describe(e)}")
        self.config = config
        self.ready = True
        return _info(self.name, self.version)

    def setup(self, config, *before):
        if self.init_hook is not None:
            self.init_hook(*before, config)

    def install(self, module_name):
        module = sys.modules.get(module_name)
        if module is not None:
            existing = getattr(module, "WitWorld", None)
            if existing is not None and getattr(existing, "_sluice_plugin", None) is not None:
                raise RuntimeError(f"{module_name}: one Sluice plugin per module "
                                   f"(already {existing._sluice_plugin.name})")
            module.WitWorld = self.world_class()

    def world_class(self):
        raise NotImplementedError


class _Interceptor(_Plugin):
    world = "packed-interceptor"

    def intercept_packed(self, batch) -> bytes:
        if not self.ready:
            self.fail("not initialised")
        func = self.target
        config = self.config
        buf = bytes(batch) if not isinstance(batch, bytes) else batch
        (n,) = _u32_from(buf, 0)
        out = bytearray(buf[0:4])
        append = out.append
        u32 = _u32_from
        u16 = _u16_from
        Received = _Received
        encode = _encode_verdict
        drop_ = DROP
        pb = b"\x00\x00"  # the previous event's header block (none at first)
        lpb = 2
        p = 4
        ev = None
        try:
            for _ in range(n):
                # An event whose header block is the same bytes as the previous one's ends
                # its block at the same length: no need to walk it.
                if buf.startswith(pb, p):
                    p += lpb
                else:
                    hs = p
                    (hc,) = u16(buf, p)
                    p += 2
                    for _ in range(hc):
                        p += 4 + u32(buf, p)[0]
                        p += 4 + u32(buf, p)[0]
                    pb = buf[hs:p]
                    lpb = p - hs
                (bl,) = u32(buf, p)
                p += 4
                ev = Received(pb, buf[p:p + bl])
                p += bl
                v = func(ev, config)
                if v is ev:
                    if ev._ops or ev.body is not ev._ob:
                        out += ev._verdict()
                    else:
                        append(0)
                elif v is drop_:
                    append(3)
                else:
                    out += encode(v, ev)
        except _Err:
            raise
        except struct.error as e:
            self.fail(f"malformed batch from the host: {e}")
        except Exception as e:
            self.fail(_describe(e))
        return bytes(out)

    def world_class(self):
        plugin = self

        class WitWorld:
            _sluice_plugin = plugin

            def init(self, config: str):
                with _CALL:
                    return plugin.do_init(config)

            def intercept_packed(self, batch: bytes) -> bytes:
                with _CALL:
                    return plugin.intercept_packed(batch)

        return WitWorld


def _wit_event(e):
    if isinstance(e, Event):
        headers, body = e.headers, e.body
    elif isinstance(e, (bytes, bytearray, memoryview, str)):
        headers, body = [], _body_bytes(e)
    else:
        raise TypeError(f"decode must return events (Event, bytes or str), not {type(e).__name__}")
    if _wit_types is not None:
        return _wit_types.Event(headers=headers, body=body)
    return Event(body, headers)


def _from_wit(e) -> Event:
    if isinstance(e, Event):
        return e
    ev = Event.__new__(Event)
    ev._h = [tuple(h) for h in e.headers]
    ev.body = bytes(e.body)
    return ev


class Codec:
    """A base for `@serde` classes: keeps the config as `self.config`."""

    def __init__(self, config=None):
        self.config = config

    def decode(self, payload: bytes, content_type: str) -> list:
        raise NotImplementedError

    def encode(self, events: list) -> bytes:
        raise NotImplementedError


class _Serde(_Plugin):
    world = "serde"

    def setup(self, config, *before):
        self.instance = self.target(config)
        super().setup(config, *before)

    def decode(self, payload, content_type):
        if not self.ready:
            self.fail("not initialised")
        try:
            events = self.instance.decode(bytes(payload), content_type)
            return [_wit_event(e) for e in events]
        except _Err:
            raise
        except Exception as e:
            self.fail(_describe(e))

    def encode(self, events):
        if not self.ready:
            self.fail("not initialised")
        try:
            out = self.instance.encode([_from_wit(e) for e in events])
            return _body_bytes(out)
        except _Err:
            raise
        except Exception as e:
            self.fail(_describe(e))

    def world_class(self):
        plugin = self

        class WitWorld:
            _sluice_plugin = plugin

            def init(self, config: str):
                with _CALL:
                    return plugin.do_init(config)

            def decode(self, payload: bytes, content_type: str):
                with _CALL:
                    return plugin.decode(payload, content_type)

            def encode(self, events):
                with _CALL:
                    return plugin.encode(events)

        return WitWorld


class _Selector(_Plugin):
    world = "route-selector"

    def setup(self, config, channels):
        self.channels = list(channels)
        self.index = {c: i for i, c in enumerate(self.channels)}
        super().setup(config, self.channels)

    def _indices(self, items):
        out = []
        for c in items:
            if isinstance(c, str):
                i = self.index.get(c)
                if i is None:
                    raise Error(f"route to unknown channel `{c}` (channels: {', '.join(self.channels)})")
                out.append(i)
            elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(self.channels):
                out.append(c)
            else:
                raise Error(f"route to channel {c!r}: not one of the {len(self.channels)} channels")
        return out

    def select(self, events):
        if not self.ready:
            raise Error(f"{self.name}: not initialised")
        events = [_from_wit(e) for e in events]
        routes = self.target(events, self.channels, self.config)
        routes = list(routes)
        if len(routes) != len(events):
            raise Error(f"{len(routes)} routes for {len(events)} events (one per event)")
        out = []
        for r in routes:
            if not isinstance(r, Route):
                r = route(r)
            req, opt = self._indices(r.required), self._indices(r.optional)
            out.append(_wit_types.Route(required=req, optional=opt) if _wit_types is not None
                       else Route(req, opt))
        return out

    def world_class(self):
        plugin = self

        class WitWorld:
            _sluice_plugin = plugin

            def init(self, channels, config: str):
                with _CALL:
                    return plugin.do_init(config, channels)

            def select(self, events):
                # `select` has no error result: a failure traps (after a log line saying why).
                with _CALL:
                    try:
                        return plugin.select(events)
                    except Exception as e:
                        log.error(f"{plugin.name}: select failed: {_describe(e)}")
                        raise

            # componentize-py 0.25.1 cannot link a world-level export named `select` (libc has
            # a `select`); a WIT naming it `select-routes` avoids the clash.
            select_routes = select

        return WitWorld


def _decorator(kind, target, name, version, config, init):
    def wrap(t):
        plugin = kind(t, name, version, config, init)
        t.__sluice__ = plugin
        plugin.install(t.__module__)
        return t

    return wrap(target) if target is not None else wrap


def interceptor(func=None, *, name=None, version="0.1.0", config=None, init=None):
    """`@interceptor` on `f(event, config) -> verdict` (world `packed-interceptor`).

    `config`: a dataclass the plugin's config mapping is read into (else a dict is passed);
    `init`: `setup(config)` run once at init (an exception refuses the plugin)."""
    return _decorator(_Interceptor, func, name, version, config, init)


def serde(cls=None, *, name=None, version="0.1.0", config=None, init=None):
    """`@serde` on a class with `decode(self, payload, content_type) -> [Event]` and
    `encode(self, events) -> bytes` (world `serde`); made once at init as `cls(config)`."""
    return _decorator(_Serde, cls, name, version, config, init)


def selector(func=None, *, name=None, version="0.1.0", config=None, init=None):
    """`@selector` on `f(events, channels, config) -> [route]` (world `route-selector`);
    `init`: `setup(channels, config)`."""
    return _decorator(_Selector, func, name, version, config, init)


def world(target):
    """The `WitWorld` class of a decorated function or class (set on its module already)."""
    return target.__sluice__.world_class()


# --------------------------------------------------------------------------------------------
# Native testing
# --------------------------------------------------------------------------------------------

class _Testing:
    """Run plugins natively, through the same packed encoding the component uses.

    `logs` holds `(level, message)` lines and `counters` the counter totals, recorded when the
    component bindings are absent (natively); `reset()` clears them.
    """

    def __init__(self):
        self.logs = []
        self.counters = {}

    def reset(self):
        self.logs.clear()
        self.counters.clear()
        _counts.clear()

    # -- events ------------------------------------------------------------------------------

    @staticmethod
    def event(e) -> Event:
        """An Event from an Event, a body (bytes/str) or a `(headers, body)` pair."""
        if isinstance(e, Event):
            return e
        if isinstance(e, tuple) and len(e) == 2:
            return Event(e[1], e[0])
        return Event(e)

    @staticmethod
    def pack(events) -> bytes:
        """Events in the packed input layout, as the host sends a batch."""
        events = [_Testing.event(e) for e in events]
        return b"".join([_p32(len(events))] + [e._full() for e in events])

    def received(self, events) -> list:
        """Events as a plugin receives them (views into a packed batch)."""
        buf = self.pack(events)
        out = []
        p = 4
        for _ in range(_u32_from(buf, 0)[0]):
            hs = p
            (hc,) = _u16_from(buf, p)
            p += 2
            for _ in range(2 * hc):
                p += 4 + _u32_from(buf, p)[0]
            (bl,) = _u32_from(buf, p)
            out.append(_Received(buf[hs:p], buf[p + 4:p + 4 + bl]))
            p += 4 + bl
        return out

    @staticmethod
    def parts(e):
        """`(headers, body as text)` of an event, for assertions."""
        return (e.headers, e.body.decode("utf-8", "replace"))

    # -- packed verdicts ---------------------------------------------------------------------

    @staticmethod
    def unpack_verdicts(out: bytes, events) -> list:
        """Reads a packed answer for `events` as the host does: a list of `(tag, Verdict)`."""
        events = [_Testing.event(e) for e in events]
        r = _Reader(out)
        n = r.u32()
        if n != len(events):
            raise AssertionError(f"{n} verdicts for {len(events)} events")
        verdicts = []
        for e in events:
            tag = r.u8()
            if tag == 0:
                v = Verdict("keep", event=Event(e.body, e.headers))
            elif tag == 1:
                ops = []
                for _ in range(r.u16()):
                    op = r.u8()
                    ops.append((r.str(), r.str()) if op == OP_SET else (r.str(), None))
                body = r.bytes() if r.u8() else e.body
                v = Verdict("keep", event=Event(body, _apply_ops(e.headers, ops)))
            elif tag == 2:
                v = Verdict("keep", event=r.event())
            elif tag == 3:
                v = DROP
            elif tag in (4, 5):
                v = Verdict("reject" if tag == 4 else "retry", reason=r.str())
            elif tag == 6:
                v = Verdict("split", events=[r.event() for _ in range(r.u32())])
            else:
                raise AssertionError(f"unknown verdict tag {tag}")
            verdicts.append((tag, v))
        if r.at != len(out):
            raise AssertionError("trailing bytes after the verdicts")
        return verdicts

    # -- plugins -----------------------------------------------------------------------------

    @staticmethod
    def _plugin(target, cls):
        plugin = getattr(target, "__sluice__", None)
        if not isinstance(plugin, cls):
            raise TypeError(f"{target!r} is not decorated with sluice_guest.{cls.world.split('-')[-1]}")
        return plugin

    def init(self, target, config=None, channels=None):
        """Runs the plugin's init with `config` (a dict, JSON text, a config instance or None
        for the defaults); returns the plugin info, or raises Error with init's error."""
        plugin = getattr(target, "__sluice__", None)
        if plugin is None:
            raise TypeError(f"{target!r} is not a Sluice plugin")
        if config is None:
            config = "{}"
        elif isinstance(config, dict):
            config = json.dumps(config)
        extra = (list(channels or ()),) if isinstance(plugin, _Selector) else ()
        with _Capture():
            try:
                return plugin.do_init(config, *extra)
            except _Err as e:
                raise Error(e.value) from None

    def intercept_packed(self, func, batch: bytes) -> bytes:
        """The component's `intercept-packed`: raises Error with its error."""
        plugin = self._plugin(func, _Interceptor)
        with _Capture():
            try:
                return plugin.intercept_packed(batch)
            except _Err as e:
                raise Error(e.value) from e.__context__

    def run_interceptor(self, func, events, config=None) -> list:
        """Inits the interceptor with `config`, runs it on `events` (Event, body or
        `(headers, body)` each) and returns its verdicts as the host reads them:
        `Verdict`s with `kind` keep (`.event`, with the changes applied), drop, reject and
        retry (`.reason`) or split (`.events`). An exception in the plugin is raised as is."""
        plugin = self._plugin(func, _Interceptor)
        self.init(func, config)
        events = [self.event(e) for e in events]
        with _Capture():
            try:
                out = plugin.intercept_packed(self.pack(events))
            except _Err as e:
                if e.__context__ is not None:
                    raise e.__context__
                raise Error(e.value) from None
        return [v for _, v in self.unpack_verdicts(out, events)]

    def run_serde(self, cls, config=None):
        """Inits the codec; returns an object with `decode(payload, content_type="")` and
        `encode(events)` calling it as the host does (errors raised as Error)."""
        plugin = self._plugin(cls, _Serde)
        self.init(cls, config)
        return _SerdeRunner(plugin)

    def run_selector(self, func, events, channels, config=None) -> list:
        """Inits the selector with `channels`, runs it on `events`; returns `Route`s of
        channel indices."""
        plugin = self._plugin(func, _Selector)
        self.init(func, config, channels)
        with _Capture():
            return plugin.select([self.event(e) for e in events])


class _SerdeRunner:
    def __init__(self, plugin):
        self.plugin = plugin

    def decode(self, payload, content_type=""):
        with _Capture():
            try:
                return self.plugin.decode(_body_bytes(payload), content_type)
            except _Err as e:
                raise Error(e.value) from None

    def encode(self, events) -> bytes:
        with _Capture():
            try:
                return self.plugin.encode([_Testing.event(e) for e in events])
            except _Err as e:
                raise Error(e.value) from None


class _Capture:
    """Natively: print() inside a plugin call goes to testing.logs, as in a component."""

    def __enter__(self):
        if IN_COMPONENT:
            return self
        self.saved = (sys.stdout, sys.stderr)
        self.out = _LineWriter("info", "<stdout>")
        self.err = _LineWriter("warn", "<stderr>")
        self.out.live = self.err.live = True
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def __exit__(self, *exc):
        if IN_COMPONENT:
            return False
        sys.stdout, sys.stderr = self.saved
        self.out.flush()
        self.err.flush()
        _flush_counters()
        return False


class _Reader:
    def __init__(self, buf):
        self.buf, self.at = buf, 0

    def take(self, n):
        if self.at + n > len(self.buf):
            raise AssertionError("packed answer truncated")
        b = self.buf[self.at:self.at + n]
        self.at += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return _U16.unpack(self.take(2))[0]

    def u32(self):
        return _U32.unpack(self.take(4))[0]

    def bytes(self):
        return bytes(self.take(self.u32()))

    def str(self):
        return self.bytes().decode("utf-8")

    def event(self):
        headers = [(self.str(), self.str()) for _ in range(self.u16())]
        return Event(self.bytes(), headers)


testing = _Testing()
