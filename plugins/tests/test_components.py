"""Black-box tests of the built plugin components (plugins/dist/*.wasm) in a real Wasmtime,
through the Python `wasmtime` package: each component is linked the way the agent links it
(the `sluice:plugin/host` import, WASI without files, sockets or environment), initialised and
called through its world's exports.

Run by scripts/test-plugins after scripts/build-plugins. SLUICE_PLUGINS_DIST overrides the
directory of components.
"""

import json
import os
import struct
import unittest
from pathlib import Path
from types import SimpleNamespace

from wasmtime import Engine, Store, WasiConfig
from wasmtime.component import Component, Linker

DIST = Path(os.environ.get("SLUICE_PLUGINS_DIST", Path(__file__).resolve().parent.parent / "dist"))
ENGINE = Engine()

# The interfaces the agent lets a plugin import (runtime/src/plugin/sandbox.rs); everything
# else (wasi:sockets, wasi:http, ...) is refused at load.
ALLOWED_IMPORTS = ("sluice:plugin/", "wasi:io/", "wasi:cli/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/")


class Plugin:
    """One instance of a component, with the host imports recorded."""

    _components = {}

    def __init__(self, name):
        path = DIST / f"{name}.wasm"
        if name not in Plugin._components:
            Plugin._components[name] = Component.from_file(ENGINE, str(path))
        self.component = Plugin._components[name]
        self.calls = []
        linker = Linker(ENGINE)
        linker.add_wasip2()
        with linker.root() as root:
            with root.add_instance("sluice:plugin/host@0.1.0") as host:
                host.add_func("log", lambda _store, level, msg: self.calls.append(("log", level, msg)))
                host.add_func("counter-add", lambda _store, n, d: self.calls.append(("counter", n, d)))
        self.store = Store(ENGINE)
        self.store.set_wasi(WasiConfig())  # no preopened dirs, no env, no inherited stdio
        self.instance = linker.instantiate(self.store, self.component)

    def imports(self):
        return sorted(self.component.type.imports(ENGINE))

    def call(self, export, *args):
        func = self.instance.get_func(self.store, export)
        if func is None:
            raise AssertionError(f"no export `{export}`")
        result = func(self.store, *args)
        func.post_return(self.store)
        return result


def ok(result):
    """A WIT `result<T, string>` comes back as T or as the error string."""
    if isinstance(result, str):
        raise AssertionError(f"plugin returned err: {result}")
    return result


def event(body, headers=()):
    return SimpleNamespace(headers=list(headers), body=body.encode() if isinstance(body, str) else body)


def parts(events):
    return [(list(e.headers), e.body.decode()) for e in events]


# -- the packed batch layout (wit/PACKED.md) -----------------------------------------------

def _put(out, b):
    out += struct.pack("<I", len(b)) + b


def pack(events):
    out = bytearray(struct.pack("<I", len(events)))
    for headers, body in events:
        out += struct.pack("<H", len(headers))
        for k, v in headers:
            _put(out, k.encode())
            _put(out, v.encode())
        _put(out, body.encode())
    return bytes(out)


class Reader:
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
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def bytes(self):
        return self.take(self.u32())

    def string(self):
        return self.bytes().decode()

    def event(self):
        headers = [(self.string(), self.string()) for _ in range(self.u16())]
        return (headers, self.bytes().decode())


def unpack_verdicts(buf):
    r = Reader(buf)
    out = []
    for _ in range(r.u32()):
        tag = r.u8()
        if tag == 0:
            out.append(("unchanged",))
        elif tag == 1:
            ops = []
            for _ in range(r.u16()):
                op = r.u8()
                ops.append(("set", r.string(), r.string()) if op == 0 else ("remove", r.string()))
            body = r.bytes().decode() if r.u8() else None
            out.append(("patched", ops, body))
        elif tag == 2:
            out.append(("replaced", r.event()))
        elif tag == 3:
            out.append(("drop",))
        elif tag in (4, 5):
            out.append(("reject" if tag == 4 else "retry", r.string()))
        elif tag == 6:
            out.append(("split", [r.event() for _ in range(r.u32())]))
        else:
            raise AssertionError(f"unknown verdict tag {tag}")
    if r.at != len(buf):
        raise AssertionError("trailing bytes after the verdicts")
    return out


# -- tests -----------------------------------------------------------------------------------

class Imports(unittest.TestCase):
    def test_every_component_imports_only_what_the_agent_allows(self):
        names = sorted(p.stem for p in DIST.glob("*.wasm"))
        self.assertTrue({"enrich", "redact", "json", "csv", "route", "kv-py"} <= set(names), names)
        for name in names:
            if name == "escape":
                continue  # reaches for the network on purpose: the next test
            with self.subTest(plugin=name):
                refused = [i for i in Plugin(name).imports() if not i.startswith(ALLOWED_IMPORTS)]
                self.assertEqual(refused, [])

    def test_the_escape_test_plugin_imports_sockets_which_the_agent_refuses(self):
        refused = [i for i in Plugin("escape").imports() if not i.startswith(ALLOWED_IMPORTS)]
        self.assertTrue(any(i.startswith("wasi:sockets/") for i in refused), refused)

    def test_the_python_plugin_imports_no_wasi_at_all(self):
        self.assertEqual(Plugin("kv-py").imports(), ["sluice:plugin/host@0.1.0", "sluice:plugin/types@0.1.0"])


class Interceptors(unittest.TestCase):
    def test_enrich(self):
        p = Plugin("enrich")
        self.assertEqual(ok(p.call("init", '{"headers": {"region": "eu"}}')).name, "enrich")
        out = unpack_verdicts(ok(p.call("intercept-packed", pack([([], "{}")]))))
        self.assertEqual(out, [("patched", [("set", "region", "eu")], None)])

    def test_redact(self):
        p = Plugin("redact")
        self.assertIn("unknown field", p.call("init", '{"fieldz": []}'))
        p = Plugin("redact")
        info = ok(p.call("init", json.dumps({"fields": ["password"], "patterns": [r"\d{4}-\d{4}"]})))
        self.assertEqual((info.name, info.version), ("redact", "0.1.0"))
        batch = pack([
            ([("k", "v")], '{"user":"ann","password":"hunter2"}'),
            ([], '{"user":"bob"}'),
            ([], "card 1234-5678 used"),
        ])
        out = unpack_verdicts(ok(p.call("intercept-packed", batch)))
        self.assertEqual(out, [
            ("patched", [], '{"user":"ann","password":"***"}'),
            ("unchanged",),
            ("patched", [], "card *** used"),
        ])
        self.assertIn(("counter", "redacted", 2), p.calls)


class Codecs(unittest.TestCase):
    def test_json(self):
        p = Plugin("json")
        self.assertIn("json: invalid config", p.call("init", '{"mode": "xml"}'))
        p = Plugin("json")
        ok(p.call("init", '{"headers": {"user": "/user/id"}, "format": "array"}'))
        events = ok(p.call("decode", b'{"user":{"id":7}}\n\n{"a": 1}\n', "application/x-ndjson"))
        self.assertEqual(parts(events), [([("user", "7")], '{"user":{"id":7}}'), ([], '{"a":1}')])
        self.assertEqual(ok(p.call("encode", events)), b'[{"user":{"id":7}},{"a":1}]')
        self.assertIn("line 2", p.call("decode", b'{"a":1}\n{"a":', "application/x-ndjson"))
        self.assertIn("event 0: body is not valid JSON", p.call("encode", [event("nope")]))

    def test_csv(self):
        p = Plugin("csv")
        ok(p.call("init", '{"header_columns": ["id"]}'))
        events = ok(p.call("decode", b'id,text\n1,"a, ""b"""\n', "text/csv"))
        self.assertEqual(parts(events), [([("id", "1")], '{"id":"1","text":"a, \\"b\\""}')])
        self.assertEqual(ok(p.call("encode", events)), b'id,text\n1,"a, ""b"""\n')
        self.assertIn("line 3: 1 fields, expected 2", p.call("decode", b"id,text\n1,2\n3\n", ""))

    def test_xml(self):
        p = Plugin("xml")
        ok(p.call("init", '{"record": "/r/e", "headers": {"id": "@id"}, "root": "r", "element": "e"}'))
        events = ok(p.call("decode", b'<r><e id="1"><v>a &amp; b</v></e><e id="2"/></r>', "application/xml"))
        self.assertEqual(parts(events), [([("id", "1")], '{"@id":"1","v":"a & b"}'), ([("id", "2")], '{"@id":"2"}')])
        self.assertIn(b'<e id="1"><v>a &amp; b</v></e>', ok(p.call("encode", events)))
        self.assertIn("DOCTYPE is refused", p.call("decode", b'<!DOCTYPE r [<!ENTITY a "x">]><r>&a;</r>', ""))
        self.assertIn("max_depth", p.call("decode", b"<a>" * 100 + b"</a>" * 100, ""))

    def test_avro(self):
        testdata = Path(__file__).resolve().parent.parent / "avro" / "testdata"
        p = Plugin("avro")
        schema = (testdata / "order.avsc").read_text()
        ok(p.call("init", json.dumps({"schema": json.loads(schema), "codec": "zstandard"})))
        events = ok(p.call("decode", (testdata / "orders-snappy.avro").read_bytes(), ""))
        self.assertEqual(len(events), 50)
        self.assertEqual(json.loads(bytes(events[3].body))["customer"], "c3")
        again = ok(p.call("decode", ok(p.call("encode", events)), ""))
        self.assertEqual(parts(again), parts(events))
        self.assertIn("sync marker", p.call("decode", (testdata / "orders-null.avro").read_bytes()[:-1] + b"!", ""))

    def test_protobuf(self):
        import base64
        desc = (Path(__file__).resolve().parent.parent / "protobuf" / "testdata" / "orders.desc").read_bytes()
        p = Plugin("protobuf")
        cfg = {"message": "shop.v1.Order", "framing": "single", "files": {"descriptor_set": base64.b64encode(desc).decode()}}
        ok(p.call("init", json.dumps(cfg)))
        events = ok(p.call("decode", b"\x08\x07\x12\x02c7", ""))
        self.assertEqual(parts(events), [([], '{"id":"7","customer":"c7"}')])
        self.assertEqual(ok(p.call("encode", events)), b"\x08\x07\x12\x02c7")
        self.assertIn("not a shop.v1.Order", p.call("decode", b"\x08", ""))

    def test_kv_py(self):
        p = Plugin("kv-py")
        self.assertIn("unknown config key", p.call("init", '{"nope": 1}'))
        p = Plugin("kv-py")
        self.assertEqual(ok(p.call("init", '{"headers": ["level"]}')).name, "kv-py")
        events = ok(p.call("decode", b'level=info msg="hello world"\nlevel=warn n=2\n', "text/plain"))
        self.assertEqual(parts(events), [
            ([("level", "info")], '{"level":"info","msg":"hello world"}'),
            ([("level", "warn")], '{"level":"warn","n":"2"}'),
        ])
        self.assertEqual(ok(p.call("encode", events)), b'level=info msg="hello world"\nlevel=warn n=2\n')
        self.assertEqual(p.call("decode", b"a=1\nb\n", ""), "kv-py: line 2: `b` is not key=value")
        self.assertIn(("counter", "decoded_events", 2), p.calls)
        self.assertTrue(any(c[0] == "log" for c in p.calls), p.calls)


class Selectors(unittest.TestCase):
    CHANNELS = ["clicks", "orders", "other"]

    def test_route(self):
        p = Plugin("route")
        err = p.call("init", self.CHANNELS, '{"field": "/t", "default": ["nope"]}')
        self.assertIn("unknown channel `nope`", err)
        p = Plugin("route")
        ok(p.call("init", self.CHANNELS, '{"field": "/t", "mapping": {"c": ["clicks"], "o": ["orders"]}, '
                                         '"optional": {"o": ["other"]}, "default": ["other"]}'))
        routes = p.call("select", [event('{"t":"o"}'), event('{"t":"c"}'), event("x")])
        self.assertEqual([(r.required, r.optional) for r in routes], [([1], [2]), ([0], []), ([2], [])])
        self.assertIn(("counter", "defaulted", 1), p.calls)


if __name__ == "__main__":
    unittest.main()
