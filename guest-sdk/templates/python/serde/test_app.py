"""Native tests of {{name}} (no Wasm): python -m unittest"""

import unittest

import sluice_guest as sg
from sluice_guest import testing

import app


class TestLines(unittest.TestCase):
    def test_decode_one_event_per_line(self):
        codec = testing.run_serde(app.Lines)
        events = codec.decode(b"first\n\n  \nsecond\n", "text/plain")
        self.assertEqual([e.body for e in events], [b"first", b"second"])

    def test_encode(self):
        codec = testing.run_serde(app.Lines)
        self.assertEqual(codec.encode([sg.Event("a"), sg.Event("b")]), b"a\nb\n")

    def test_round_trip(self):
        codec = testing.run_serde(app.Lines)
        self.assertEqual(codec.encode(codec.decode(b"x=1\ny=2\n")), b"x=1\ny=2\n")


if __name__ == "__main__":
    unittest.main()
