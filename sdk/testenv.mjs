// What the node tests of c2cvia.js share: the live relay they run against
// (`go test -run TestJavaScriptSDK` starts it), the control server that
// moves its fake clock and counts calls (see sdk_test.go), and helpers.

import { test as nodeTest } from "node:test";
import assert from "node:assert/strict";

export const RELAY = process.env.C2CVIA_RELAY;
export const FLAKY = process.env.C2CVIA_FLAKY;
export const CONTROL = process.env.C2CVIA_CONTROL;
export const KEY = process.env.C2CVIA_KEY ?? "test-key-0123456789";
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

export async function control(path) {
  const res = await fetch(CONTROL + path, { method: "POST" });
  assert.equal(res.status, 200, `control ${path}`);
  return res.json();
}
export const advance = (by) => control(`/advance?by=${by}`);
export const count = async (path, front = "relay") => (await control(`/count?path=${encodeURIComponent(path)}&front=${front}`)).count;
/** Calls to path through C2CVIA_RELAY that the relay has answered. */
export const answered = async (path) => (await control(`/count?path=${encodeURIComponent(path)}&answered=1`)).count;

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
