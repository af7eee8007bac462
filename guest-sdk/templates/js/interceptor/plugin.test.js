import { test } from "node:test";
import assert from "node:assert/strict";
import { runInterceptor, testPlugin } from "./sluice-guest.js";
import plugin from "./plugin.js";

test("drops, rejects and tags events", () => {
  const out = runInterceptor(plugin, [
    "ts=2026-12-06T10:00:00Z level=INFO msg=hello",
    "ts=2026-12-06T10:00:01Z level=DEBUG msg=noise",
    "",
    { headers: { "processed-by": "old" }, body: "level=WARN" },
  ]);
  assert.deepEqual(out[0].headers, [["processed-by", "{{name}}"]]);
  assert.equal(out[0].text, "ts=2026-12-06T10:00:00Z level=INFO msg=hello");
  assert.equal(out[1].verdict, "drop");
  assert.deepEqual(out[2], { verdict: "reject", reason: "empty body" });
  assert.deepEqual(out[3].headers, [["processed-by", "{{name}}"]]);
  assert.deepEqual(out.logs, [["info", '{{name}} ready (dropping events containing "level=DEBUG")']]);
});

test("config overrides the defaults", () => {
  const out = runInterceptor(plugin, ["level=DEBUG", "level=TRACE"], { drop: "TRACE", header: "x", value: "1" });
  assert.deepEqual(out[0].headers, [["x", "1"]]);
  assert.equal(out[1].verdict, "drop");
});

test("unknown config keys and wrong types are refused", () => {
  assert.throws(() => testPlugin(plugin, { dorp: "x" }), /unknown key `dorp`/);
  assert.throws(() => testPlugin(plugin, { drop: 3 }), /`drop` must be a string, got number/);
});
