"""Native tests of sluice_guest (no Wasm): python -m unittest (in guest-sdk/python)."""

import struct
import sys
import types
import unittest
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import sluice_guest as sg
from sluice_guest import testing


def fresh_module(name):
    """Decorated plugins set `WitWorld` on their module: give each test its own."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    return name


def plugin(func, **kw):
    func.__module__ = fresh_module(f"plugin_{func.__name__}_{id(func)}")
    return sg.interceptor(**kw)(func)


class PackedVerdicts(unittest.TestCase):
    """Keeping an event sends back the cheapest verdict for what changed."""

    def run_tags(self, func, events, config=None):
        testing.init(func, config)
        out = testing.intercept_packed(func, testing.pack(events))
        return testing.unpack_verdicts(out, events)

    def test_unchanged_is_one_byte(self):
        f = plugin(lambda e, c: e)
        out = (testing.init(f), testing.intercept_packed(f, testing.pack(["a", ([("k", "v")], "b")])))[1]
        self.assertEqual(out, struct.pack("<I", 2) + b"\x00\x00")

    def test_header_set_is_a_patch_of_ops_only(self):
        f = plugin(lambda e, c: e.set_header("k", "new"))
        [(tag, v)] = self.run_tags(f, [([("k", "old"), ("x", "1")], "body")])
        self.assertEqual(tag, 1)
        self.assertEqual(v.event, sg.Event("body", [("k", "new"), ("x", "1")]))
        out = testing.intercept_packed(f, testing.pack(["b"]))
        self.assertEqual(out[4:], b"\x01\x01\x00\x00" + struct.pack("<I", 1) + b"k" + struct.pack("<I", 3) + b"new\x00")

    def test_remove_and_body(self):
        def f(e, c):
            self.assertEqual(e.remove_header("a"), "1")
            self.assertIsNone(e.remove_header("zz"))
            e.body = e.body.upper()
            return e
        [(tag, v)] = self.run_tags(plugin(f), [([("a", "1"), ("b", "2")], "hi")])
        self.assertEqual(tag, 1)
        self.assertEqual(v.event, sg.Event("HI", [("b", "2")]))

    def test_body_only_change_sends_no_headers(self):
        def f(e, c):
            e.text = "new"
            return sg.keep(e)
        f = plugin(f)
        testing.init(f)
        out = testing.intercept_packed(f, testing.pack([([("a", "1")], "old")]))
        self.assertEqual(out[4:], b"\x01\x00\x00\x01" + struct.pack("<I", 3) + b"new")

    def test_other_verdicts(self):
        def f(e, c):
            return {
                b"d": sg.drop(), b"r": sg.reject("bad"), b"t": sg.retry("later"),
                b"s": sg.split([sg.Event("x", {"n": "1"}), "y"]), b"n": sg.Event("new"),
            }[e.body]
        got = self.run_tags(plugin(f), ["d", "r", "t", "s", "n"])
        self.assertEqual([t for t, _ in got], [3, 4, 5, 6, 2])
        self.assertEqual([v for _, v in got], [
            sg.DROP, sg.reject("bad"), sg.retry("later"),
            sg.split([sg.Event("x", [("n", "1")]), sg.Event("y")]), sg.keep(sg.Event("new")),
        ])

    def test_reading_headers_sees_changes(self):
        seen = []

        def f(e, c):
            e.set_header("a", "2").set_header("c", "3")
            e.remove_header("b")
            seen.append((e.header("a"), e.header("b"), e.header("c", "?"), e.headers, e.changed))
            return e
        self.run_tags(plugin(f), [([("a", "1"), ("b", "x")], "")])
        self.assertEqual(seen, [("2", None, "3", [("a", "2"), ("c", "3")], True)])

    def test_many_events_with_varied_headers(self):
        events = [([("h", str(i % 3))] * (i % 2), f"body {i}") for i in range(50)]
        f = plugin(lambda e, c: e.set_header("i", e.text.split()[1]) if e.header("h") == "1" else e)
        got = self.run_tags(f, events)
        for i, (tag, v) in enumerate(got):
            self.assertEqual(tag, 1 if i % 2 and i % 3 == 1 else 0, i)
            self.assertEqual(v.event.body, f"body {i}".encode())

    def test_returned_none_or_junk_is_an_error(self):
        f = plugin(lambda e, c: None)
        testing.init(f)
        with self.assertRaisesRegex(sg.Error, "returned None"):
            testing.intercept_packed(f, testing.pack(["a"]))

    def test_exception_names_type_message_and_line(self):
        def boom(e, c):
            raise KeyError("nope")
        f = plugin(boom, name="boomer")
        testing.init(f)
        with self.assertRaisesRegex(sg.Error, r"^boomer: KeyError: 'nope' \(test_sluice_guest.py:\d+ in boom\)$"):
            testing.intercept_packed(f, testing.pack(["a"]))
        with self.assertRaises(KeyError):  # run_interceptor raises the plugin's own exception
            testing.run_interceptor(f, ["a"])

    def test_sg_error_is_its_message(self):
        def f(e, c):
            raise sg.Error("my reason")
        f = plugin(f, name="p")
        testing.init(f)
        with self.assertRaisesRegex(sg.Error, "^p: my reason$"):
            testing.intercept_packed(f, testing.pack(["a"]))


@dataclass
class Inner:
    n: int = 0


@dataclass
class Cfg:
    name: str
    count: int = 1
    ratio: float = 0.5
    on: bool = False
    tags: List[str] = field(default_factory=list)
    extra: Dict[str, int] = field(default_factory=dict)
    maybe: Optional[str] = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.count < 0:
            raise ValueError("count must be >= 0")


class Config(unittest.TestCase):
    def test_maps_json_onto_the_dataclass(self):
        c = sg.parse_config(Cfg, '{"name": "x", "count": 3, "ratio": 2, "tags": ["a"], "extra": {"k": 1},'
                                 ' "maybe": null, "inner": {"n": 4}}')
        self.assertEqual(c, Cfg("x", 3, 2.0, False, ["a"], {"k": 1}, None, Inner(4)))
        self.assertIsInstance(c.ratio, float)

    def test_refusals(self):
        for text, msg in [
            ('{"name": "x", "nope": 1}', r"unknown config key `nope` \(expected: `name`, `count`"),
            ("{}", "missing config key `name`"),
            ('{"name": 1}', "`name`: expected a string, got a number"),
            ('{"name": "x", "count": true}', "`count`: expected an integer, got a boolean"),
            ('{"name": "x", "count": 1.5}', "`count`: expected an integer, got a number"),
            ('{"name": "x", "on": "yes"}', "`on`: expected a boolean, got a string"),
            ('{"name": "x", "tags": ["a", 2]}', r"`tags\[1\]`: expected a string"),
            ('{"name": "x", "extra": {"k": "v"}}', "`extra.k`: expected an integer"),
            ('{"name": "x", "maybe": 3}', "`maybe`: expected a string or null"),
            ('{"name": "x", "inner": {"m": 1}}', "unknown config key `inner.m`"),
            ('{"name": "x", "count": -1}', "count must be >= 0"),
            ("[1]", "config must be a mapping"),
            ("{oops", "config is not JSON"),
        ]:
            with self.subTest(text=text):
                with self.assertRaisesRegex(ValueError, msg):
                    sg.parse_config(Cfg, text)

    def test_init_returns_the_error(self):
        f = plugin(lambda e, c: e, name="cfg-test", config=Cfg)
        with self.assertRaisesRegex(sg.Error, "^cfg-test: invalid config: missing config key `name`$"):
            testing.init(f, "")
        self.assertEqual(testing.init(f, {"name": "n"}).name, "cfg-test")

    def test_without_a_config_class_the_mapping_is_passed(self):
        seen = []
        f = plugin(lambda e, c: seen.append(c) or e)
        testing.run_interceptor(f, ["a"], {"anything": [1]})
        self.assertEqual(seen, [{"anything": [1]}])

    def test_init_hook_errors_refuse_the_plugin(self):
        def setup(cfg):
            raise RuntimeError("no way")
        f = plugin(lambda e, c: e, name="h", init=setup)
        with self.assertRaisesRegex(sg.Error, "^h: init failed: RuntimeError: no way"):
            testing.init(f)


class LogAndCounters(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_print_log_and_counters_inside_a_call(self):
        def f(e, c):
            print("line one\nline two", end=" ")
            print("and more")
            print("partial", end="")
            print("oops", file=sys.stderr)
            sg.log.debug("dbg")
            sg.counter("seen")
            sg.counter("bytes", len(e.body))
            return e
        testing.run_interceptor(plugin(f), ["ab", "c"])
        self.assertEqual(testing.counters, {"seen": 2, "bytes": 3})
        self.assertEqual(testing.logs[:5], [
            ("info", "line one"), ("info", "line two and more"), ("warn", "oops"), ("debug", "dbg"),
            ("info", "partialline one"),
        ])
        self.assertEqual(testing.logs[-1], ("info", "partial"))  # flushed at the end of the call


class Serde(unittest.TestCase):
    def test_codec_class(self):
        @dataclass
        class C:
            sep: str = ","

        class Csvish(sg.Codec):
            def decode(self, payload, content_type):
                return [sg.Event(p, {"ct": content_type}) for p in payload.split(self.config.sep.encode())]

            def encode(self, events):
                return self.config.sep.join(e.text for e in events)

        Csvish.__module__ = fresh_module("serde_mod")
        sg.serde(name="csvish", config=C)(Csvish)
        self.assertTrue(hasattr(sys.modules["serde_mod"], "WitWorld"))
        codec = testing.run_serde(Csvish, {"sep": ";"})
        events = codec.decode(b"a;b", "text/x")
        self.assertEqual([testing.parts(e) for e in events], [([("ct", "text/x")], "a"), ([("ct", "text/x")], "b")])
        self.assertEqual(codec.encode(events), b"a;b")
        with self.assertRaisesRegex(sg.Error, "^csvish: ValueError: empty separator"):
            testing.run_serde(Csvish, {"sep": ""}).decode(b"a")


class Selector(unittest.TestCase):
    def test_routes_by_index_or_name(self):
        def pick(events, channels, config):
            return [sg.route(0, optional="audit") if e.header("p") else sg.route("slow") for e in events]
        pick.__module__ = fresh_module("sel_mod")
        sg.selector(name="pick")(pick)
        routes = testing.run_selector(pick, [([("p", "1")], "a"), "b"], ["fast", "audit", "slow"])
        self.assertEqual(routes, [sg.Route([0], [1]), sg.Route([2], [])])

    def test_wrong_count_and_unknown_channel(self):
        def bad(events, channels, config):
            return [sg.route("nope")] * len(events) if events else [sg.route(0)]
        bad.__module__ = fresh_module("sel_bad")
        sg.selector(name="bad")(bad)
        with self.assertRaisesRegex(sg.Error, "1 routes for 0 events"):
            testing.run_selector(bad, [], ["a"])
        with self.assertRaisesRegex(sg.Error, "unknown channel `nope`"):
            testing.run_selector(bad, ["x"], ["a"])


class OnePluginPerModule(unittest.TestCase):
    def test_second_plugin_in_a_module_is_refused(self):
        name = fresh_module("twice")

        def a(e, c):
            return e
        a.__module__ = name
        sg.interceptor(a)

        def b(e, c):
            return e
        b.__module__ = name
        with self.assertRaisesRegex(RuntimeError, "one Sluice plugin per module"):
            sg.interceptor(b)


if __name__ == "__main__":
    unittest.main()
