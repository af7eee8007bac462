"""Native tests of {{name}} (no Wasm): python -m unittest"""

import unittest

import sluice_guest as sg
from sluice_guest import testing

import app


class Test{{ident}}(unittest.TestCase):
    def test_default_config(self):
        verdicts = testing.run_interceptor(app.{{ident}}, [
            ([("host", "web-1")], "ts=1 level=INFO msg=hello"),
            "ts=2 level=DEBUG msg=noise",
            "",
        ])
        self.assertEqual(verdicts[0].kind, "keep")
        self.assertEqual(verdicts[0].event.headers, [("host", "web-1"), ("processed-by", "{{name}}")])
        self.assertEqual(verdicts[1], sg.drop())
        self.assertEqual(verdicts[2], sg.reject("empty body"))

    def test_config(self):
        verdicts = testing.run_interceptor(app.{{ident}}, ["level=DEBUG", "x"],
                                           {"drop": "", "header": "seen", "value": "yes"})
        self.assertEqual([v.event.header("seen") for v in verdicts], ["yes", "yes"])

    def test_bad_config_is_refused(self):
        with self.assertRaisesRegex(sg.Error, "unknown config key `nope`"):
            testing.init(app.{{ident}}, {"nope": 1})
        with self.assertRaisesRegex(sg.Error, "`drop`: expected a string"):
            testing.init(app.{{ident}}, {"drop": 3})

    def test_print_goes_to_the_log(self):
        testing.reset()
        testing.init(app.{{ident}}, {})
        self.assertIn("{{name}} ready", " ".join(msg for _, msg in testing.logs))


if __name__ == "__main__":
    unittest.main()
