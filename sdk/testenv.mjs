// What the node tests of c2cvia.js share: the live relay they run against
// (`go test -run TestJavaScriptSDK` starts it), the control server that
// moves its fake clock and counts calls (see sdk_test.go), and helpers.

import { test as nodeTest } from "node:test";
import assert from "node:assert/strict";

export const RELAY = process.env.C2CVIA_RELAY;
export const FLAKY = process.env.C2CVIA_FLAKY;
export const CONTROL = process.env.C2CVIA_CONTROL;
export const KEY = process.env.C2CVIA_KEY ?? "test-key-0123456789";
/** A relay of its own whose logins expire soon (the relogin case's token_ttl_ms), and its controls. */
export const SHORT_RELAY = process.env.C2CVIA_SHORT_RELAY;
export const SHORT_CONTROL = process.env.C2CVIA_SHORT_CONTROL;
if (!RELAY || !CONTROL) throw new Error("run through `go test -run TestJavaScriptSDK` (C2CVIA_RELAY and C2CVIA_CONTROL are unset)");

/**
 * Every test ends within 30 s, failing, whatever it waits for. options are
 * node:test's: `todo: "why"` marks a test whose failure does not fail the
 * run, for one that waits for the relay to support what it checks.
 */
export const test = (name, fn, options = {}) => nodeTest(name, { timeout: 30_000, ...options }, fn);

let nets = 0;
/** A net of its own for each test. */
export const newNet = () => `js-${process.pid}-${++nets}`;

/** Calls the control server: C2CVIA_CONTROL's, or another's (SHORT_CONTROL). */
export async function control(path, server = CONTROL) {
  const res = await fetch(server + path, { method: "POST" });
  assert.equal(res.status, 200, `control ${path}`);
  return res.json();
}
export const advance = (by, server = CONTROL) => control(`/advance?by=${by}`, server);
export const count = async (path, front = "relay", server = CONTROL) => (await control(`/count?path=${encodeURIComponent(path)}&front=${front}`, server)).count;
/** Calls to path through C2CVIA_RELAY (or server's relay) that the relay has answered. */
export const answered = async (path, server = CONTROL) => (await control(`/count?path=${encodeURIComponent(path)}&answered=1`, server)).count;

/** Waits until cond() holds, checking every 10 ms; fails after ms. */
export async function until(cond, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A promise with resolve outside. */
export function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

/** Rejects with a clear message when p does not settle within ms. */
export function within(p, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** A handler that says what it got, for the round trips. */
export async function echo(req) {
  const url = new URL(req.url);
  if (url.pathname === "/bin") {
    const bytes = new Uint8Array(await req.arrayBuffer());
    return new Response(bytes.reverse(), { headers: { "content-type": "application/octet-stream" } });
  }
  if (url.pathname === "/nothing") return new Response(null, { status: 204 });
  if (url.pathname === "/teapot") {
    return new Response("short and stout", { status: 418, headers: { "X-Custom": "yes", "content-type": "text/plain" } });
  }
  if (url.pathname === "/json") {
    return new Response(await req.text(), { headers: { "content-type": "application/json" } });
  }
  return Response.json({
    method: req.method,
    path: url.pathname,
    query: [...url.searchParams],
    headers: Object.fromEntries(req.headers),
    body: req.method === "GET" || req.method === "HEAD" ? null : await req.text(),
  });
}

/**
 * A minimal EventSource on fetch streaming, as browsers behave: reconnects
 * with Last-Event-ID after a cut, and gives up (CLOSED) on a response that
 * is not an event stream.
 */
export class TestEventSource {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.lastEventId = "";
    this.onmessage = null;
    this.onerror = null;
    this.connects = []; // the Last-Event-ID of each connection
    TestEventSource.instances.push(this);
    this.connect();
  }
  async connect() {
    this.ctrl = new AbortController();
    const headers = { accept: "text/event-stream" };
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    this.connects.push(this.lastEventId);
    try {
      const res = await fetch(this.url, { headers, signal: this.ctrl.signal });
      if (res.status !== 200 || !res.headers.get("content-type")?.startsWith("text/event-stream")) {
        await res.body?.cancel();
        this.readyState = 2;
        this.onerror?.({ type: "error" });
        return;
      }
      this.readyState = 1;
      const decoder = new TextDecoder();
      let buf = "";
      let data = [];
      let id;
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        for (let nl; (nl = buf.indexOf("\n")) >= 0; ) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (id !== undefined) this.lastEventId = id;
            if (data.length) this.onmessage?.({ data: data.join("\n"), lastEventId: this.lastEventId });
            data = [];
            id = undefined;
          } else if (!line.startsWith(":")) {
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "data") data.push(value);
            if (field === "id") id = value;
          }
        }
      }
    } catch {
      // cut: reconnect below
    }
    if (this.readyState === 2) return;
    this.readyState = 0;
    this.onerror?.({ type: "error" });
    setTimeout(() => this.readyState !== 2 && this.connect(), 20);
  }
  /** A network cut: the browser reconnects with Last-Event-ID. */
  cut() {
    this.ctrl.abort();
  }
  close() {
    this.readyState = 2;
    this.ctrl?.abort();
  }
}
