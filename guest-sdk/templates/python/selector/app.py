"""{{name}}: a Sluice selector. It chooses the channels (of the source's `channels` list) each
event goes to: events whose header `header` is `value` go to the first channel, the others to
the last one (both required).

    plugins:
      {{name}}:
        path: dist/{{name}}.wasm
        config: { header: priority, value: high }
"""

from dataclasses import dataclass

import sluice_guest as sg


@dataclass
class Config:
    header: str = "priority"
    value: str = "high"


def setup(channels: list, config: Config) -> None:
    if not channels:
        raise sg.Error("needs at least one channel")
    print(f"{{name}} ready: {config.header}={config.value} -> {channels[0]}, else {channels[-1]}")


@sg.selector(name="{{name}}", version="0.1.0", config=Config, init=setup)
def {{ident}}(events: list, channels: list, config: Config) -> list:
    first, last = sg.route(0), sg.route(len(channels) - 1)
    return [first if e.header(config.header) == config.value else last for e in events]
