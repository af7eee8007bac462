import { test } from "node:test";
import assert from "node:assert/strict";
import { testPlugin } from "./sluice-guest.js";
import plugin from "./plugin.js";

const CHANNELS = ["fast", "archive", "slow"];

test("routes by header", () => {
  const p = testPlugin(plugin, {}, CHANNELS);
  const routes = p.select([
    { headers: { priority: "high" }, body: "a" },
    { headers: { priority: "low" }, body: "b" },
    "no headers",
  ]);
  assert.deepEqual(routes, [
    { required: [0], optional: [] },
    { required: [2], optional: [] },
    { required: [2], optional: [] },
  ]);
  assert.deepEqual(p.logs, [["info", "{{name}} ready: priority=high -> fast, others -> slow"]]);
});

test("config picks the header", () => {
  const p = testPlugin(plugin, { header: "tier", value: "gold" }, CHANNELS);
  assert.deepEqual(p.select([{ headers: [["tier", "gold"]], body: "" }])[0].required, [0]);
});

test("refuses no channels and unknown keys", () => {
  assert.throws(() => testPlugin(plugin, {}, []), /needs at least one channel/);
  assert.throws(() => testPlugin(plugin, { priority: "x" }, CHANNELS), /unknown key `priority`/);
});
