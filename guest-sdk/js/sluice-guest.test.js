// Tests of the SDK without Wasm: `node --test` in guest-sdk/js.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Event,
  counter,
  drop,
  interceptor,
  keep,
  log,
  pack,
  parseConfig,
  reject,
  retry,
  runInterceptor,
  selector,
  serde,
  split,
  testPlugin,
  unpackVerdicts,
} from "./sluice-guest.js";

const text = (b) => new TextDecoder().decode(b);

test("config: defaults, overrides, unknown keys and wrong types", () => {
  const d = { s: "a", n: 1, b: true, l: [], o: {}, any: null };
  assert.deepEqual(parseConfig("", d), d);
  assert.deepEqual(parseConfig("  ", d), d);
  assert.deepEqual(parseConfig('{"s": "x", "any": [1]}', d), { ...d, s: "x", any: [1] });
  assert.throws(() => parseConfig('{"z": 1}', d), /unknown key `z` \(expected one of: s, n, b, l, o, any\)/);
  assert.throws(() => parseConfig('{"z": 1}', {}), /this plugin takes no config/);
  assert.throws(() => parseConfig('{"n": "1"}', d), /`n` must be a number, got string/);
  assert.throws(() => parseConfig('{"l": {}}', d), /`l` must be an array, got object/);
  assert.throws(() => parseConfig('{"o": []}', d), /`o` must be an object, got array/);
  assert.throws(() => parseConfig("[1]", d), /expected a JSON object, got array/);
  assert.throws(() => parseConfig("{", d), /invalid plugin config/);
});

test("events read lazily from a packed batch", () => {
  let seen;
  const p = interceptor((e) => {
    seen = {
      h: e.header("b"),
      missing: e.header("zz"),
      headers: e.headers,
      text: e.text,
      size: e.size,
      has: e.has("a"),
      inc: e.includes("wor"),
      incBytes: e.includes(new TextEncoder().encode("hel")),
      notInc: e.includes("a"), // in a header, not the body
    };
  });
  const out = runInterceptor(p, [{ headers: [["a", "1"], ["b", "ü2"]], body: "hello world" }]);
  assert.deepEqual(seen, {
    h: "ü2",
    missing: undefined,
    headers: [["a", "1"], ["b", "ü2"]],
    text: "hello world",
    size: 11,
    has: true,
    inc: true,
    incBytes: true,
    notInc: false,
  });
  assert.deepEqual(out[0], { verdict: "keep", changed: false, headers: [["a", "1"], ["b", "ü2"]], body: out[0].body, text: "hello world" });
});

test("includes never matches across events and handles many needles", () => {
  const bodies = ["xxlev", "el=DEBUG", "level=DEBUG", "", "a level=DEBUG", "nothing", "level=DEBU"];
  const p = interceptor((e) => (e.includes("level=DEBUG") ? drop() : undefined));
  assert.deepEqual(
    runInterceptor(p, bodies).map((v) => v.verdict),
    ["keep", "keep", "drop", "keep", "drop", "keep", "keep"],
  );
  // alternating needles, and more needles than the batch cache holds
  const q = interceptor((e) => {
    const hits = [];
    for (let i = 0; i < 40; i++) if (e.includes(`k${i};`)) hits.push(i);
    if (e.includes("zz")) hits.push("zz");
    e.setHeader("hits", hits.join(","));
  });
  const out = runInterceptor(q, ["k1;k39;", "zz k2;", "k39;"]);
  assert.deepEqual(out.map((v) => v.headers[0][1]), ["1,39", "2,zz", "39"]);
});

test("verdicts use the cheapest packed form", () => {
  const p = interceptor((e) => {
    switch (e.text) {
      case "same":
        return keep();
      case "set":
        e.setHeader("x", "1");
        return keep(e);
      case "set2":
        e.setHeader("x", "1");
        return e;
      case "remove":
        e.removeHeader("a");
        e.removeHeader("missing");
        return;
      case "body":
        e.text = "new body";
        return;
      case "replace":
        return new Event("other", { k: "v" });
      case "drop":
        return drop();
      case "reject":
        return reject("bad");
      case "retry":
        return retry("later");
      case "split":
        return split(["one", { headers: [["n", "2"]], body: "two" }, e]);
      case "throw":
        throw new Error("boom");
    }
  });
  const batch = ["same", "set", "set2", "remove", "body", "replace", "drop", "reject", "retry", "split"].map((b) => ({
    headers: [["a", "0"]],
    body: b,
  }));
  const out = runInterceptor(p, batch);
  assert.deepEqual(
    out.map((v) => [v.verdict, v.changed]),
    [
      ["keep", false],
      ["keep", "patched"],
      ["keep", "patched"],
      ["keep", "patched"],
      ["keep", "patched"],
      ["keep", "replaced"],
      ["drop", undefined],
      ["reject", undefined],
      ["retry", undefined],
      ["split", undefined],
    ],
  );
  assert.deepEqual(out[1].ops, [["set", "x", "1"]]);
  assert.deepEqual(out[1].headers, [["a", "0"], ["x", "1"]]);
  assert.deepEqual(out[2].ops, [["set", "x", "1"]]); // the cached patch bytes
  assert.deepEqual(out[3].ops, [["remove", "a"]]);
  assert.deepEqual(out[3].headers, []);
  assert.deepEqual([out[4].ops, out[4].text, out[4].headers], [[], "new body", [["a", "0"]]]);
  assert.deepEqual([out[5].headers, out[5].text], [[["k", "v"]], "other"]);
  assert.equal(out[7].reason, "bad");
  assert.equal(out[8].reason, "later");
  assert.deepEqual(
    out[9].events.map((e) => [e.headers, e.text]),
    [
      [[], "one"],
      [[["n", "2"]], "two"],
      [[["a", "0"]], "split"],
    ],
  );
  assert.throws(() => runInterceptor(p, ["throw"]), /^Error: boom$/);
});

test("setHeader replaces in place, header() sees changes", () => {
  const p = interceptor((e) => {
    e.setHeader("a", "1").setHeader("c", 3);
    assert.equal(e.header("a"), "1");
    assert.equal(e.header("c"), "3");
    assert.equal(e.removeHeader("b"), "x");
    assert.equal(e.header("b"), undefined);
    assert.deepEqual(e.headers, [["a", "1"], ["c", "3"]]);
  });
  const out = runInterceptor(p, [{ headers: [["a", "0"], ["b", "x"]], body: "" }]);
  assert.deepEqual(out[0].headers, [["a", "1"], ["c", "3"]]);
  const f = new Event("b", [["a", "0"]]).setHeader("a", "1").setHeader("z", "2");
  assert.deepEqual(f.headers, [["a", "1"], ["z", "2"]]);
  assert.equal(f.removeHeader("a"), "1");
  assert.deepEqual(f.headers, [["z", "2"]]);
});

test("logs, counters and console reach the host; init errors refuse the plugin", () => {
  const p = interceptor({
    name: "t",
    version: "1.2.3",
    config: { n: 1 },
    init(config) {
      console.log("ready", { n: config.n });
      console.warn("careful");
      log.debug("dbg");
      if (config.n < 0) throw new Error("n must be >= 0");
    },
    intercept(e) {
      counter("seen");
      counter("bytes", e.size);
    },
  });
  const t = testPlugin(p, { n: 2 });
  assert.deepEqual(t.info, { name: "t", version: "1.2.3" });
  t.intercept(["ab", "c"]);
  assert.deepEqual(t.logs, [["info", 'ready {"n":2}'], ["warn", "careful"], ["debug", "dbg"]]);
  assert.deepEqual(t.counters, { seen: 2, bytes: 3 });
  assert.throws(() => testPlugin(p, { n: -1 }), /n must be >= 0/);
  // the exports themselves return the error message (the world's err), never an Error
  const exp = p.bind({ log() {}, counterAdd() {} }, { console: false });
  assert.equal(catchThrown(() => exp.init('{"n": -1}')), "n must be >= 0");
  assert.equal(catchThrown(() => exp.init('{"m": 1}')), "invalid plugin config: unknown key `m` (expected one of: n)");
  assert.equal(catchThrown(() => exp.interceptPacked(new Uint8Array([9, 0, 0, 0]))), "malformed packed batch: event 0 truncated");
});

function catchThrown(f) {
  try {
    f();
  } catch (e) {
    return e;
  }
  return "no throw";
}

test("serde: decode and encode", () => {
  const p = serde({
    config: { sep: "," },
    decode: (payload, ct, c) => text(payload).split(c.sep).map((s) => new Event(s, { ct })),
    encode: (events, c) => events.map((e) => e.text + "/" + e.header("ct")).join(c.sep),
  });
  const t = testPlugin(p);
  const evs = t.decode("a,b", "text/x");
  assert.deepEqual(evs.map((e) => [e.headers, e.text]), [
    [[["ct", "text/x"]], "a"],
    [[["ct", "text/x"]], "b"],
  ]);
  assert.equal(text(t.encode(evs)), "a/text/x,b/text/x");
  const bad = serde({ decode: () => { throw new Error("line 2: nope"); }, encode: () => "" });
  assert.throws(() => testPlugin(bad).decode("x"), /line 2: nope/);
});

test("selector: indices, names, optional routes", () => {
  const p = selector({
    config: {},
    init(config, channels) {
      assert.deepEqual(channels, ["a", "b", "c"]);
    },
    select: (events) => events.map((e) => (e.header("to") === "b" ? { required: ["b"], optional: [2] } : [0])),
  });
  const t = testPlugin(p, {}, ["a", "b", "c"]);
  assert.deepEqual(t.select([{ headers: { to: "b" }, body: "" }, "x"]), [
    { required: [1], optional: [2] },
    { required: [0], optional: [] },
  ]);
  const bad = selector({ select: (events) => events.map(() => ["nope"]) });
  assert.throws(() => testPlugin(bad, {}, ["a"]).select(["x"]), /no channel `nope` \(channels: a\)/);
});

test("the packed answer, byte for byte", () => {
  const p = interceptor((e) => {
    if (e.text === "d") return drop();
    if (e.text !== "k") e.setHeader("h", "v");
  });
  const exp = p.bind({ log() {}, counterAdd() {} }, { console: false });
  exp.init("");
  const res = Array.from(exp.interceptPacked(pack(["k", "s", "d", "s"])));
  const patch = [1, 1, 0, 0, 1, 0, 0, 0, 104, 1, 0, 0, 0, 118, 0]; // 1 op: set "h" "v"; body unchanged
  assert.deepEqual(res, [4, 0, 0, 0, 0, ...patch, 3, ...patch]);
  assert.deepEqual(unpackVerdicts(new Uint8Array(res), ["k", "s", "d", "s"]).map((v) => v.verdict), ["keep", "keep", "drop", "keep"]);
});
