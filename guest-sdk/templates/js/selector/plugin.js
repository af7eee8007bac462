// {{name}}: a Sluice routing selector (world `selector`): picks channels for each event.
// Plain JavaScript: `plugin.test.js` imports it under Node, `component.js` binds it to the
// agent for the WebAssembly build.
import { selector } from "./sluice-guest.js";

export default selector({
  name: "{{name}}",
  version: "0.1.0",
  config: { header: "priority", value: "high" },

  init(config, channels) {
    if (channels.length === 0) throw new Error("{{name}} needs at least one channel");
    console.log(`{{name}} ready: ${config.header}=${config.value} -> ${channels[0]}, others -> ${channels.at(-1)}`);
  },

  // One route per event: channel indices (or names); a plain array is `required`.
  select(events, channels, config) {
    const first = [0];
    const last = [channels.length - 1];
    return events.map((e) => (e.header(config.header) === config.value ? first : last));
  },
});
