"""{{name}}: a Sluice serde plugin (a codec): payloads into events and events into payloads.

One event per non-empty line on decode (the content type is ignored); encode writes each
event's body followed by a newline.

    plugins:
      {{name}}: { path: dist/{{name}}.wasm }
"""

import sluice_guest as sg


@sg.serde(name="{{name}}", version="0.1.0")
class Lines(sg.Codec):
    def __init__(self, config):
        super().__init__(config)  # self.config: the plugin's config mapping (a dict)
        print("{{name}} ready")   # print() reaches the agent's log

    def decode(self, payload: bytes, content_type: str) -> list:
        events = [sg.Event(line) for line in payload.split(b"\n") if line.strip()]
        sg.counter("decoded_events", len(events))
        return events

    def encode(self, events: list) -> bytes:
        return b"".join(e.body + b"\n" for e in events)
