// {{name}}: a Sluice interceptor (world `packed-interceptor`), run on every batch a source
// receives. Plain JavaScript: `plugin.test.js` imports it under Node, `component.js` binds it
// to the agent for the WebAssembly build.
import { interceptor, drop, reject } from "./sluice-guest.js";

export default interceptor({
  name: "{{name}}",
  version: "0.1.0",
  // Defaults of the plugin's `config:` in the pipeline file; other keys, or values of another
  // type, are refused when the plugin starts.
  config: { drop: "level=DEBUG", header: "processed-by", value: "{{name}}" },

  init(config) {
    console.log(`{{name}} ready (dropping events containing ${JSON.stringify(config.drop)})`);
  },

  // Called once per event; return nothing to keep it (with the changes made here),
  // or drop(), reject(reason), retry(reason), split([...events]).
  intercept(event, config) {
    if (event.size === 0) return reject("empty body");
    if (config.drop !== "" && event.includes(config.drop)) return drop();
    event.setHeader(config.header, config.value);
  },
});
