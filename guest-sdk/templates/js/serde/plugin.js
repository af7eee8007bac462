// {{name}}: a Sluice codec (world `serde`): bytes from a transport into events, and events
// into bytes for a sink. Plain JavaScript: `plugin.test.js` imports it under Node,
// `component.js` binds it to the agent for the WebAssembly build.
import { serde, Event, counter } from "./sluice-guest.js";

const NL = 10;

export default serde({
  name: "{{name}}",
  version: "0.1.0",
  config: {},

  init() {
    console.log("{{name}} ready");
  },

  // One event per non-empty line (a trailing "\r" is kept in the body).
  decode(payload, contentType, config) {
    const events = [];
    let start = 0;
    while (start < payload.length) {
      let end = payload.indexOf(NL, start);
      if (end === -1) end = payload.length;
      if (end > start) events.push(new Event(payload.slice(start, end)));
      start = end + 1;
    }
    counter("decoded_events", events.length);
    return events;
  },

  // Each body followed by "\n".
  encode(events, config) {
    let size = 0;
    for (const e of events) size += e.size + 1;
    const out = new Uint8Array(size);
    let at = 0;
    for (const e of events) {
      out.set(e.body, at);
      at += e.size;
      out[at++] = NL;
    }
    return out;
  },
});

