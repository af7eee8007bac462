"""Native tests of {{name}} (no Wasm): python -m unittest"""

import unittest

import sluice_guest as sg
from sluice_guest import testing

import app

CHANNELS = ["fast", "audit", "slow"]


class Test{{ident}}(unittest.TestCase):
    def test_routes_by_header(self):
        routes = testing.run_selector(app.{{ident}}, [
            ([("priority", "high")], "a"),
            ([("priority", "low")], "b"),
            "no headers",
        ], CHANNELS)
        self.assertEqual(routes, [sg.route(0), sg.route(2), sg.route(2)])

    def test_config(self):
        routes = testing.run_selector(app.{{ident}}, [([("tier", "gold")], "a")], CHANNELS,
                                      {"header": "tier", "value": "gold"})
        self.assertEqual(routes[0].required, [0])

    def test_bad_config_is_refused(self):
        with self.assertRaisesRegex(sg.Error, "unknown config key `priority`"):
            testing.init(app.{{ident}}, {"priority": "high"}, CHANNELS)


if __name__ == "__main__":
    unittest.main()
