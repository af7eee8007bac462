import { test } from "node:test";
import assert from "node:assert/strict";
import { testPlugin } from "./sluice-guest.js";
import plugin from "./plugin.js";

test("decodes one event per non-empty line", () => {
  const p = testPlugin(plugin);
  const events = p.decode("a=1\n\nb=2\nc=3", "text/plain");
  assert.deepEqual(events.map((e) => e.text), ["a=1", "b=2", "c=3"]);
  assert.deepEqual(p.counters, { decoded_events: 3 });
  assert.deepEqual(p.logs, [["info", "{{name}} ready"]]);
});

test("encodes each body followed by a newline", () => {
  const p = testPlugin(plugin);
  const bytes = p.encode(["a=1", { headers: { k: "v" }, body: "b=2" }]);
  assert.equal(new TextDecoder().decode(bytes), "a=1\nb=2\n");
});

test("takes no config", () => {
  assert.throws(() => testPlugin(plugin, { x: 1 }), /unknown key `x`/);
});
