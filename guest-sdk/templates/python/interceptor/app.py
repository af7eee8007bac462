"""{{name}}: a Sluice interceptor. It sees every event of every batch a source receives.

Drops events whose body contains `drop`, rejects empty ones (to the dead-letter channel) and
sets the header `header` to `value` on the rest. Config (the plugin's `config:` mapping in
the pipeline file; every key optional):

    plugins:
      {{name}}:
        path: dist/{{name}}.wasm
        config: { drop: "level=DEBUG", header: processed-by, value: {{name}} }
"""

from dataclasses import dataclass

import sluice_guest as sg


@dataclass
class Config:
    drop: str = "level=DEBUG"  # events whose body contains this are dropped ("" drops none)
    header: str = "processed-by"
    value: str = "{{name}}"

    def __post_init__(self):
        self.drop_bytes = self.drop.encode()  # once here, not once per event


def setup(config: Config) -> None:
    # print() reaches the agent's log (stdout as info, stderr as warn).
    print(f"{{name}} ready: drop {config.drop!r}, set {config.header}={config.value}")


@sg.interceptor(name="{{name}}", version="0.1.0", config=Config, init=setup)
def {{ident}}(event: sg.Event, config: Config):
    body = event.body
    if not body:
        return sg.reject("empty body")
    if config.drop_bytes and config.drop_bytes in body:
        return sg.drop()
    event.set_header(config.header, config.value)
    return event  # keep it: only the header change goes back to the host
