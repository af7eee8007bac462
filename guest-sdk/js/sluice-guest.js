// @sluice/guest 0.1.0: write Sluice plugins in JavaScript.
//
// One ES module with no dependencies. A plugin module imports helpers from here and exports
// a plugin object; a two-line entry module (component.js in the templates) binds it to the
// host import and is what componentize-js builds:
//
//   // plugin.js: plain JS, importable by `node --test`
//   import { interceptor, drop, reject } from "./sluice-guest.js";
//   export default interceptor({
//     name: "my-filter", version: "0.1.0",
//     config: { drop: "level=DEBUG" },            // defaults; unknown keys refused at init
//     intercept(event, config) {
//       if (event.includes(config.drop)) return drop();
//       event.setHeader("processed-by", "my-filter");
//     },
//   });
//
//   // component.js: the component entry (never imported by tests)
//   import * as host from "sluice:plugin/host@0.1.0";
//   import plugin from "./plugin.js";
//   export const { init, interceptPacked } = plugin.bind(host);
//
// Worlds (package sluice:plugin@0.1.0): `interceptor()` implements `packed-interceptor`
// (wit/PACKED.md), `serde()` the `serde` world, `selector()` the `selector` world.
// `log.*`, `counter()` and `console.*` reach the agent's log and counters through the host.

const utf8 = new TextDecoder();
const utf8enc = new TextEncoder();

// -- host ------------------------------------------------------------------------------------

let host = null; // { log(level, message), counterAdd(name, bigint) } once bound

function format(args) {
  let s = "";
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (i > 0) s += " ";
    if (typeof a === "string") s += a;
    else if (a instanceof Error) s += a.stack ? `${a.message}\n${a.stack}` : String(a.message);
    else if (a === undefined || typeof a === "function" || typeof a === "symbol") s += String(a);
    else if (typeof a === "bigint") s += `${a}n`;
    else {
      try {
        s += JSON.stringify(a) ?? String(a);
      } catch {
        s += String(a);
      }
    }
  }
  return s;
}

function emit(level, args) {
  const msg = format(args);
  if (host) host.log(level, msg);
  else if (nativeConsoleError) nativeConsoleError(`[${level}] ${msg}`);
}

const nativeConsoleError =
  typeof console !== "undefined" && console.error ? console.error.bind(console) : null;

/** Writes to the agent's log (to stderr when run natively without a host). */
export const log = Object.freeze({
  trace: (...a) => emit("trace", a),
  debug: (...a) => emit("debug", a),
  info: (...a) => emit("info", a),
  warn: (...a) => emit("warn", a),
  error: (...a) => emit("error", a),
});

/** Adds `delta` (default 1) to the plugin counter `name` (sluice_plugin_counter_total). */
export function counter(name, delta = 1) {
  if (host) host.counterAdd(String(name), typeof delta === "bigint" ? delta : BigInt(Math.trunc(delta)));
}

/** Sends console.log/info/warn/error/debug/trace to the host log (stdio is disabled in the component). */
const CONSOLE_METHODS = ["log", "info", "warn", "error", "debug", "trace"];

function routeConsole() {
  const c = globalThis.console || (globalThis.console = {});
  c.log = log.info;
  c.info = log.info;
  c.warn = log.warn;
  c.error = log.error;
  c.debug = log.debug;
  c.trace = log.trace;
}

// -- errors, config ----------------------------------------------------------------------------

/** A thrown error's message, as a world's `err(string)`. */
function message(e) {
  if (typeof e === "string") return e;
  if (e && typeof e.message === "string") return e.message;
  return String(e);
}

function kind(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

const article = (k) => (k === "array" || k === "object" ? "an " : "a ");

/**
 * Reads the plugin's `config:` JSON over `defaults`: unknown keys and values whose basic type
 * differs from the default's (string, number, boolean, array, object) are refused. A default
 * of `null` accepts any value.
 */
export function parseConfig(json, defaults = {}) {
  let given = {};
  const text = typeof json === "string" ? json.trim() : "";
  if (json && typeof json === "object") given = json;
  else if (text !== "") {
    try {
      given = JSON.parse(text);
    } catch (e) {
      throw new Error(`invalid plugin config: ${message(e)}`);
    }
  }
  if (given === null || kind(given) !== "object") {
    throw new Error(`invalid plugin config: expected a JSON object, got ${kind(given)}`);
  }
  const out = { ...defaults };
  for (const key of Object.keys(given)) {
    if (!Object.prototype.hasOwnProperty.call(defaults, key)) {
      const known = Object.keys(defaults);
      throw new Error(
        `invalid plugin config: unknown key \`${key}\`` +
          (known.length ? ` (expected one of: ${known.join(", ")})` : " (this plugin takes no config)"),
      );
    }
    const want = kind(defaults[key]);
    const got = kind(given[key]);
    if (want !== "null" && want !== "undefined" && want !== got) {
      throw new Error(`invalid plugin config: \`${key}\` must be ${article(want)}${want}, got ${got}`);
    }
    out[key] = given[key];
  }
  return out;
}

// -- verdicts ----------------------------------------------------------------------------------

const KEEP = Object.freeze({ tag: 0 });
const DROP = Object.freeze({ tag: 3 });

/** Keep the event (with its changes); `keep(other)` replaces it by `other`. Returning nothing keeps too. */
export function keep(event) {
  return event === undefined ? KEEP : event;
}
/** Discard the event on purpose (counted as dropped). */
export function drop() {
  return DROP;
}
/** Poison: the host dead-letters the event, unchanged, with this reason. */
export function reject(reason) {
  return { tag: 4, reason: String(reason) };
}
/** Fail the whole batch now; the source retries it later. */
export function retry(reason) {
  return { tag: 5, reason: String(reason) };
}
/** Replace the event by zero or more events (Event, string, Uint8Array or {headers, body}). */
export function split(events) {
  return { tag: 6, events: Array.from(events) };
}

// -- strings and bytes -------------------------------------------------------------------------

// Encoded header names/values, kept while few (config strings repeat on every event).
let strCache = new Map();
function enc(s) {
  let b = strCache.get(s);
  if (b === undefined) {
    b = utf8enc.encode(s);
    if (strCache.size >= 4096) strCache = new Map();
    strCache.set(s, b);
  }
  return b;
}

function toBytes(body) {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return utf8enc.encode(body);
  if (body == null) return new Uint8Array(0);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError(`an event body must be a string or a Uint8Array, got ${kind(body)}`);
}

function headerPairs(h) {
  if (h == null) return [];
  if (Array.isArray(h)) return h.map(([k, v]) => [String(k), String(v)]);
  if (h instanceof Map) return [...h].map(([k, v]) => [String(k), String(v)]);
  return Object.entries(h).map(([k, v]) => [String(k), String(v)]);
}

function indexOfBytes(hay, nd) {
  const n = nd.length;
  if (n === 0) return 0;
  const first = nd[0];
  const last = hay.length - n;
  let i = hay.indexOf(first);
  while (i !== -1 && i <= last) {
    let j = 1;
    while (j < n && hay[i + j] === nd[j]) j++;
    if (j === n) return i;
    i = hay.indexOf(first, i + 1);
  }
  return -1;
}

// Byte-exact substring search over the current batch: the batch and the needle are decoded
// as windows-1252 (one character per byte, one-to-one), so string offsets are byte offsets and
// the native String#indexOf does the scan. Per needle, the next match is remembered, so a batch
// is scanned about once per needle in all.
let scanBuf = null; // the batch being intercepted
let scanStr = null; // it, decoded one character per byte (lazily)
let scanLast = null; // the last needle's state: { needle, latin, from, next }
let scanMap = null; // every needle's state, this batch

let latin1 = null;
function bytesToLatin(b) {
  if (latin1 === null) {
    try {
      latin1 = new TextDecoder("windows-1252");
    } catch {
      latin1 = false;
    }
  }
  if (latin1) return latin1.decode(b);
  let s = "";
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
  return s;
}

/** Whether the batch holds `needle` in [start, end); undefined when there are too many needles. */
function batchIncludes(needle, start, end) {
  let s = scanLast;
  if (s === null || s.needle !== needle) {
    if (scanMap === null) scanMap = new Map();
    s = scanMap.get(needle);
    if (s === undefined) {
      if (scanMap.size >= 32) return undefined;
      s = { needle, latin: bytesToLatin(utf8enc.encode(needle)), from: 0, next: -2 };
      scanMap.set(needle, s);
    }
    scanLast = s;
  }
  if (s.next === -2 || start < s.from || (s.next !== -1 && s.next < start)) {
    if (scanStr === null) scanStr = bytesToLatin(scanBuf);
    s.from = start;
    s.next = scanStr.indexOf(s.latin, start);
  }
  return s.next !== -1 && s.next + s.latin.length <= end;
}

// -- events ------------------------------------------------------------------------------------

const RECEIVED = Symbol("received");
const WIRE = Symbol("wire");

/**
 * One event: headers (unique names, in order) and a body. Events the host sent are read lazily
 * from the packed batch; changes are recorded so the answer carries only what changed.
 */
export class Event {
  /** `new Event(body, headers)`: body a string or Uint8Array, headers `[[name, value]]` or `{name: value}`. */
  constructor(body, headers, a, b, c, d) {
    if (body === RECEIVED) {
      // (RECEIVED, batch, first header offset, header count, body start, body end)
      this._b = headers;
      this._h = a;
      this._n = b;
      this._bs = c;
      this._be = d;
      this._hdrs = null;
      this._ops = null;
      this._body = null;
      this._bodySet = false;
      this._text = undefined;
    } else if (body === WIRE) {
      // (WIRE, {headers: [[name, value]], body: Uint8Array}) from the typed worlds
      this._b = null;
      this._h = 0;
      this._n = 0;
      this._bs = 0;
      this._be = 0;
      this._hdrs = headers.headers;
      this._ops = null;
      this._body = headers.body;
      this._bodySet = false;
      this._text = undefined;
    } else {
      this._b = null;
      this._h = 0;
      this._n = 0;
      this._bs = 0;
      this._be = 0;
      this._hdrs = headerPairs(headers);
      this._ops = null;
      this._body = toBytes(body);
      this._bodySet = false;
      this._text = undefined;
    }
  }

  /** An Event from an Event, a string/Uint8Array body, or `{headers, body}`. */
  static from(x) {
    if (x instanceof Event) return x;
    if (typeof x === "string" || x instanceof Uint8Array) return new Event(x);
    if (x && typeof x === "object") return new Event(x.body ?? x.text, x.headers);
    throw new TypeError(`not an event: ${kind(x)}`);
  }

  /** The body bytes (a view into the batch: copy it to keep it past the call). */
  get body() {
    let b = this._body;
    if (b === null) b = this._body = this._b.subarray(this._bs, this._be);
    return b;
  }
  set body(v) {
    this._body = toBytes(v);
    this._text = typeof v === "string" ? v : undefined;
    if (this._b !== null) this._bodySet = true;
  }

  /** The body decoded as UTF-8 (once, on first use). */
  get text() {
    let t = this._text;
    if (t === undefined) t = this._text = utf8.decode(this.body);
    return t;
  }
  set text(v) {
    this.body = String(v);
  }

  /** The body parsed as JSON. */
  json() {
    return JSON.parse(this.text);
  }

  /** The body's length in bytes. */
  get size() {
    return this._body === null ? this._be - this._bs : this._body.length;
  }

  /**
   * True when the body contains `needle`, a string or bytes, compared byte for byte. In an
   * interceptor, a string is searched once per batch and needle (natively, over the whole
   * batch), so a call costs about as much as a property read.
   */
  includes(needle) {
    if (typeof needle !== "string") return indexOfBytes(this.body, toBytes(needle)) !== -1;
    if (this._b !== scanBuf || this._bodySet) return indexOfBytes(this.body, enc(needle)) !== -1;
    if (needle === "") return true;
    const found = batchIncludes(needle, this._bs, this._be);
    return found !== undefined ? found : indexOfBytes(this.body, enc(needle)) !== -1;
  }

  /** The value of header `name` (exact, case-sensitive), or undefined. */
  header(name) {
    const ops = this._ops;
    if (ops !== null) {
      for (let i = ops.length - 3; i >= 0; i -= 3) {
        if (ops[i + 1] === name) return ops[i] === 0 ? ops[i + 2] : undefined;
      }
    }
    if (this._b === null) {
      const h = this._hdrs;
      for (let i = 0; i < h.length; i++) if (h[i][0] === name) return h[i][1];
      return undefined;
    }
    const n = this._n;
    if (n === 0) return undefined;
    const b = this._b;
    const want = enc(name);
    const wl = want.length;
    let p = this._h;
    for (let i = 0; i < n; i++) {
      const kl = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
      const ks = p + 4;
      p = ks + kl;
      const vl = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
      const vs = p + 4;
      p = vs + vl;
      if (kl === wl) {
        let j = 0;
        while (j < wl && b[ks + j] === want[j]) j++;
        if (j === wl) return utf8.decode(b.subarray(vs, vs + vl));
      }
    }
    return undefined;
  }

  /** True when header `name` is present. */
  has(name) {
    return this.header(name) !== undefined;
  }

  /** The headers in order, changes applied: a fresh `[[name, value]]` array (edit with setHeader). */
  get headers() {
    if (this._b === null) return this._hdrs.map((p) => [p[0], p[1]]);
    const out = [];
    const b = this._b;
    let p = this._h;
    for (let i = 0; i < this._n; i++) {
      const kl = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
      const k = utf8.decode(b.subarray(p + 4, p + 4 + kl));
      p += 4 + kl;
      const vl = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
      out.push([k, utf8.decode(b.subarray(p + 4, p + 4 + vl))]);
      p += 4 + vl;
    }
    const ops = this._ops;
    if (ops !== null) {
      for (let i = 0; i < ops.length; i += 3) {
        const at = out.findIndex((h) => h[0] === ops[i + 1]);
        if (ops[i] === 0) {
          if (at >= 0) out[at][1] = ops[i + 2];
          else out.push([ops[i + 1], ops[i + 2]]);
        } else if (at >= 0) out.splice(at, 1);
      }
    }
    return out;
  }

  /** Sets a header, replacing an existing value (in place) or appending it. Returns the event. */
  setHeader(name, value) {
    if (typeof name !== "string") name = String(name);
    if (typeof value !== "string") value = String(value);
    if (this._b === null) {
      const h = this._hdrs;
      for (let i = 0; i < h.length; i++) {
        if (h[i][0] === name) {
          h[i][1] = value;
          return this;
        }
      }
      h.push([name, value]);
    } else if (this._ops === null) this._ops = [0, name, value];
    else this._ops.push(0, name, value);
    return this;
  }

  /** Removes a header; returns its old value (undefined when it was absent). */
  removeHeader(name) {
    name = String(name);
    const old = this.header(name);
    if (old === undefined) return undefined;
    if (this._b === null) {
      const h = this._hdrs;
      h.splice(
        h.findIndex((p) => p[0] === name),
        1,
      );
    } else if (this._ops === null) this._ops = [1, name, undefined];
    else this._ops.push(1, name, undefined);
    return old;
  }

  /** True when nothing was changed since the host sent it. */
  get unchanged() {
    return this._b !== null && this._ops === null && !this._bodySet;
  }

  /** `{headers, body}` as the typed worlds carry an event. */
  toJSON() {
    return { headers: this.headers, text: this.text };
  }
}

function toWire(x) {
  if (x instanceof Event) {
    if (x._b === null) return { headers: x._hdrs, body: x._body };
    return { headers: x.headers, body: x.body };
  }
  const e = Event.from(x);
  return { headers: e._hdrs, body: e._body };
}

function fromWire(w) {
  return new Event(WIRE, w);
}

// -- the packed batch (wit/PACKED.md) ----------------------------------------------------------

// One growable output buffer for every call.
let out = new Uint8Array(1 << 16);
let pos = 0;

function grow(n) {
  let size = out.length * 2;
  while (size < pos + n) size *= 2;
  const bigger = new Uint8Array(size);
  bigger.set(out.subarray(0, pos));
  out = bigger;
}

function putU32(v) {
  if (pos + 4 > out.length) grow(4);
  out[pos] = v;
  out[pos + 1] = v >>> 8;
  out[pos + 2] = v >>> 16;
  out[pos + 3] = v >>> 24;
  pos += 4;
}

function putBytes(b) {
  const n = b.length;
  if (pos + 4 + n > out.length) grow(4 + n);
  out[pos] = n;
  out[pos + 1] = n >>> 8;
  out[pos + 2] = n >>> 16;
  out[pos + 3] = n >>> 24;
  out.set(b, pos + 4);
  pos += 4 + n;
}

function putStr(s) {
  putBytes(s.length < 256 ? enc(s) : utf8enc.encode(s));
}

function putEvent(x) {
  const e = Event.from(x);
  const h = e._b === null && e._ops === null ? e._hdrs : e.headers;
  if (h.length > 0xffff) throw new Error(`an event has ${h.length} headers (at most 65535)`);
  if (pos + 2 > out.length) grow(2);
  out[pos] = h.length;
  out[pos + 1] = h.length >>> 8;
  pos += 2;
  for (let i = 0; i < h.length; i++) {
    putStr(h[i][0]);
    putStr(h[i][1]);
  }
  putBytes(e.body);
}

// The last single-set patch, encoded whole (tag 1, 1 op, set name value, body unchanged):
// an interceptor setting the same header on every event copies these bytes.
let patchName = null;
let patchValue = null;
let patchBytes = null;

function putKept(e) {
  const ops = e._ops;
  if (ops === null && !e._bodySet) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 0;
    return;
  }
  const nOps = ops === null ? 0 : ops.length / 3;
  if (nOps > 0xffff) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 2;
    putEvent(e);
    return;
  }
  if (nOps === 1 && ops[0] === 0 && !e._bodySet) {
    if (ops[1] !== patchName || ops[2] !== patchValue) {
      const start = pos;
      writePatch(ops, 1, e);
      patchName = ops[1];
      patchValue = ops[2];
      patchBytes = out.slice(start, pos);
      return;
    }
    const n = patchBytes.length;
    if (pos + n > out.length) grow(n);
    out.set(patchBytes, pos);
    pos += n;
    return;
  }
  writePatch(ops, nOps, e);
}

function writePatch(ops, nOps, e) {
  if (pos + 3 > out.length) grow(3);
  out[pos] = 1;
  out[pos + 1] = nOps;
  out[pos + 2] = nOps >>> 8;
  pos += 3;
  for (let i = 0; i < nOps * 3; i += 3) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = ops[i];
    putStr(ops[i + 1]);
    if (ops[i] === 0) putStr(ops[i + 2]);
  }
  if (pos + 1 > out.length) grow(1);
  if (e._bodySet) {
    out[pos++] = 1;
    putBytes(e._body);
  } else out[pos++] = 0;
}

function putVerdict(v, e) {
  if (v === undefined || v === e || v === KEEP) return putKept(e);
  if (v === DROP) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 3;
    return;
  }
  if (v instanceof Event) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 2;
    return putEvent(v);
  }
  const tag = v === null || typeof v !== "object" ? -1 : v.tag;
  if (tag === 4 || tag === 5) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = tag;
    putStr(v.reason);
  } else if (tag === 6) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 6;
    putU32(v.events.length);
    for (const x of v.events) putEvent(x);
  } else if (v && typeof v.then === "function") {
    throw new Error("an interceptor must return its verdict synchronously (not a Promise)");
  } else if (v && typeof v === "object" && ("body" in v || "headers" in v)) {
    if (pos + 1 > out.length) grow(1);
    out[pos++] = 2;
    putEvent(v);
  } else {
    throw new Error(`not a verdict: ${format([v])} (return keep(), drop(), reject(r), retry(r), split(events) or an event)`);
  }
}

function malformed(what) {
  return new Error(`malformed packed batch: ${what}`);
}

/** Runs `fn` over every event of a packed batch; returns the packed verdicts. */
function interceptBatch(batch, fn, config) {
  const b = batch;
  const len = b.length;
  if (len < 4) throw malformed("shorter than its count");
  const count = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  pos = 0;
  putU32(count);
  scanBuf = b;
  scanStr = null;
  scanLast = null;
  scanMap = null;
  let p = 4;
  for (let i = 0; i < count; i++) {
    if (p + 2 > len) throw malformed(`event ${i} truncated`);
    const n = b[p] | (b[p + 1] << 8);
    const h = p + 2;
    p = h;
    for (let k = 0; k < n * 2; k++) {
      if (p + 4 > len) throw malformed(`event ${i} truncated`);
      p += 4 + ((b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0);
    }
    if (p + 4 > len) throw malformed(`event ${i} truncated`);
    const bs = p + 4;
    p = bs + ((b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0);
    if (p > len) throw malformed(`event ${i} truncated`);
    const e = new Event(RECEIVED, b, h, n, bs, p);
    const v = fn(e, config);
    if (v === undefined || v === e || v === KEEP) {
      if (e._ops === null && !e._bodySet) {
        if (pos >= out.length) grow(1);
        out[pos++] = 0;
      } else putKept(e);
    } else putVerdict(v, e);
  }
  scanBuf = null;
  scanStr = null;
  scanLast = null;
  scanMap = null;
  return out.subarray(0, pos);
}

// -- plugins -----------------------------------------------------------------------------------

function info(opts) {
  return { name: String(opts.name ?? "plugin"), version: String(opts.version ?? "0.1.0") };
}

/** Wraps an export so an exception becomes the world's `err(message)`. */
function guarded(f) {
  return function (...args) {
    try {
      return f.apply(this, args);
    } catch (e) {
      throw message(e);
    }
  };
}

/** Wraps an export without an error result: the message is logged, then the call traps. */
function logged(f) {
  return function (...args) {
    try {
      return f.apply(this, args);
    } catch (e) {
      log.error(`${message(e)}`);
      throw e instanceof Error ? e : new Error(message(e));
    }
  };
}

function makePlugin(world, opts, build) {
  const plugin = {
    world,
    info: info(opts),
    defaults: opts.config ?? {},
    config: null,
    /** The world's exports, calling `host` (the `sluice:plugin/host` import). */
    bind(h, { console: replaceConsole = true } = {}) {
      host = h;
      if (replaceConsole) routeConsole();
      return build(plugin);
    },
  };
  return plugin;
}

function runInit(plugin, opts, json, channels) {
  const config = parseConfig(json, plugin.defaults);
  plugin.config = config;
  if (opts.init) {
    if (channels === undefined) opts.init(config);
    else opts.init(config, channels);
  }
  return plugin.info;
}

/**
 * An interceptor (world `packed-interceptor`) from a per-event function
 * `intercept(event, config) -> verdict`: return nothing (or the event) to keep it with its
 * changes, `drop()`, `reject(reason)`, `retry(reason)`, `split(events)`, or another event.
 * Options: `name`, `version`, `config` (defaults), `init(config)`, `intercept`.
 */
export function interceptor(opts) {
  if (typeof opts === "function") opts = { intercept: opts };
  const fn = opts.intercept;
  if (typeof fn !== "function") throw new TypeError("interceptor({ intercept(event, config) { ... } })");
  return makePlugin("packed-interceptor", opts, (plugin) => ({
    init: guarded((json) => runInit(plugin, opts, json)),
    interceptPacked: guarded((batch) => interceptBatch(batch, fn, plugin.config ?? plugin.defaults)),
  }));
}

/**
 * A codec (world `serde`): `decode(payload: Uint8Array, contentType, config) -> events`
 * (Event, string, Uint8Array or {headers, body} each) and `encode(events, config) -> bytes`
 * (Uint8Array or string). Options: `name`, `version`, `config`, `init(config)`.
 */
export function serde(opts) {
  if (typeof opts.decode !== "function" || typeof opts.encode !== "function") {
    throw new TypeError("serde({ decode(payload, contentType, config), encode(events, config) })");
  }
  return makePlugin("serde", opts, (plugin) => ({
    init: guarded((json) => runInit(plugin, opts, json)),
    decode: guarded((payload, contentType) => {
      const events = opts.decode(payload, contentType, plugin.config ?? plugin.defaults);
      const res = [];
      for (const e of events) res.push(toWire(e));
      return res;
    }),
    encode: guarded((events) => toBytes(opts.encode(events.map(fromWire), plugin.config ?? plugin.defaults))),
  }));
}

function toRoute(r, names, n) {
  let required;
  let optional = [];
  if (Array.isArray(r) || typeof r === "number" || typeof r === "string") required = [].concat(r);
  else if (r && typeof r === "object") {
    required = r.required ?? [];
    optional = r.optional ?? [];
  } else throw new Error(`not a route: ${format([r])}`);
  const idx = (c) => {
    const i = typeof c === "string" ? names.indexOf(c) : c;
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new Error(`no channel \`${c}\` (channels: ${names.join(", ")})`);
    return i;
  };
  return { required: Array.from(required, idx), optional: Array.from(optional, idx) };
}

/**
 * A routing selector (world `selector`): `select(events, channels, config) -> routes`, one
 * route per event: `{required, optional}` of channel indices or names, or a plain array
 * (required). Options: `name`, `version`, `config`, `init(config, channels)`.
 */
export function selector(opts) {
  if (typeof opts.select !== "function") throw new TypeError("selector({ select(events, channels, config) { ... } })");
  let channels = [];
  return makePlugin("selector", opts, (plugin) => ({
    init: guarded((chans, json) => {
      channels = Array.from(chans);
      return runInit(plugin, opts, json, channels);
    }),
    select: logged((events) => {
      const routes = opts.select(events.map(fromWire), channels, plugin.config ?? plugin.defaults);
      if (!routes || routes.length !== events.length) {
        throw new Error(`select returned ${routes ? routes.length : routes} routes for ${events.length} events`);
      }
      const res = new Array(routes.length);
      for (let i = 0; i < routes.length; i++) res[i] = toRoute(routes[i], channels, channels.length);
      return res;
    }),
  }));
}

/** A route to channel indices (or names): `route([0])`, `route([0], [2])`. */
export function route(required, optional = []) {
  return { required: [].concat(required), optional: [].concat(optional) };
}

// -- native testing ----------------------------------------------------------------------------

/** Packs events (Event, string, or {headers, body}) into the host's batch layout. */
export function pack(events) {
  pos = 0;
  putU32(events.length);
  for (const e of events) putEvent(e);
  return out.slice(0, pos);
}

function reader(buf) {
  let p = 0;
  const need = (n) => {
    if (p + n > buf.length) throw new Error("packed answer truncated");
  };
  const r = {
    u8: () => (need(1), buf[p++]),
    u16: () => (need(2), (p += 2), buf[p - 2] | (buf[p - 1] << 8)),
    u32: () => (need(4), (p += 4), (buf[p - 4] | (buf[p - 3] << 8) | (buf[p - 2] << 16) | (buf[p - 1] << 24)) >>> 0),
    bytes: () => {
      const n = r.u32();
      need(n);
      p += n;
      return buf.slice(p - n, p);
    },
    str: () => utf8.decode(r.bytes()),
    event: () => {
      const headers = [];
      for (let n = r.u16(); n > 0; n--) headers.push([r.str(), r.str()]);
      const body = r.bytes();
      return { headers, body, text: utf8.decode(body) };
    },
    done: () => p === buf.length,
  };
  return r;
}

/** Decodes packed verdicts against the input events into readable objects. */
export function unpackVerdicts(buf, inputs) {
  const r = reader(buf);
  const n = r.u32();
  if (inputs && n !== inputs.length) throw new Error(`${n} verdicts for ${inputs.length} events`);
  const res = [];
  for (let i = 0; i < n; i++) {
    const tag = r.u8();
    const input = inputs ? Event.from(inputs[i]) : new Event("");
    if (tag === 0) {
      res.push({ verdict: "keep", changed: false, headers: input.headers, body: input.body, text: input.text });
    } else if (tag === 1) {
      const e = new Event(input.body, input.headers);
      const ops = [];
      for (let k = r.u16(); k > 0; k--) {
        if (r.u8() === 0) {
          const [name, value] = [r.str(), r.str()];
          ops.push(["set", name, value]);
          e.setHeader(name, value);
        } else {
          const name = r.str();
          ops.push(["remove", name]);
          e.removeHeader(name);
        }
      }
      if (r.u8() === 1) e.body = r.bytes();
      res.push({ verdict: "keep", changed: "patched", ops, headers: e.headers, body: e.body, text: e.text });
    } else if (tag === 2) res.push({ verdict: "keep", changed: "replaced", ...r.event() });
    else if (tag === 3) res.push({ verdict: "drop" });
    else if (tag === 4) res.push({ verdict: "reject", reason: r.str() });
    else if (tag === 5) res.push({ verdict: "retry", reason: r.str() });
    else if (tag === 6) {
      const events = [];
      for (let k = r.u32(); k > 0; k--) events.push(r.event());
      res.push({ verdict: "split", events });
    } else throw new Error(`unknown verdict tag ${tag}`);
  }
  if (!r.done()) throw new Error("trailing bytes after the verdicts");
  return res;
}

const asError = (e) => (e instanceof Error ? e : new Error(message(e)));

/**
 * An instance of `plugin` as the agent would run it, without Wasm: its exports bound to a
 * recording host (`logs`: [level, message], `counters`: {name: total}), `init` run with
 * `config` (an object or JSON; an init error throws). Methods: intercept(events),
 * decode(payload, contentType), encode(events), select(events).
 */
export function testPlugin(plugin, config = {}, channels = []) {
  const t = { logs: [], counters: {} };
  const rec = {
    log: (level, msg) => t.logs.push([level, msg]),
    counterAdd: (name, d) => (t.counters[name] = (t.counters[name] ?? 0) + Number(d)),
  };
  const exp = plugin.bind(rec, { console: false });
  // During a call, the host and console go to the recorder, as in the component.
  const call = (f) => {
    const saved = host;
    const c = globalThis.console;
    const savedConsole = CONSOLE_METHODS.map((m) => c[m]);
    host = rec;
    routeConsole();
    try {
      return f();
    } catch (e) {
      throw asError(e);
    } finally {
      host = saved;
      CONSOLE_METHODS.forEach((m, i) => (c[m] = savedConsole[i]));
    }
  };
  const json = typeof config === "string" ? config : JSON.stringify(config);
  t.info = call(() => (plugin.world === "selector" ? exp.init(channels, json) : exp.init(json)));
  t.intercept = (events) => unpackVerdicts(call(() => exp.interceptPacked(pack(events))), events);
  t.decode = (payload, contentType = "") =>
    call(() => exp.decode(toBytes(payload), contentType)).map((w) => ({ headers: w.headers, body: w.body, text: utf8.decode(w.body) }));
  t.encode = (events) => call(() => exp.encode(events.map(toWire).map((w) => ({ headers: headerPairs(w.headers), body: w.body }))));
  t.select = (events) => call(() => exp.select(events.map(toWire)));
  return t;
}

/** Runs an interceptor over `events` with `config`: readable verdicts, plus `.logs` and `.counters`. */
export function runInterceptor(plugin, events, config = {}) {
  const t = testPlugin(plugin, config);
  const res = t.intercept(events);
  res.logs = t.logs;
  res.counters = t.counters;
  return res;
}
