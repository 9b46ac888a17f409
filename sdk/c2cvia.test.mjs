// Node tests of c2cvia.js against a live relay. `go test -run
// TestJavaScriptSDK` starts the relay and runs them; the relay's clock is
// fake and moves only through the control server (see sdk_test.go).

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { serve, login, RelayError } from "./c2cvia.js";

const RELAY = process.env.C2CVIA_RELAY;
const FLAKY = process.env.C2CVIA_FLAKY;
const CONTROL = process.env.C2CVIA_CONTROL;
const KEY = process.env.C2CVIA_KEY ?? "test-key-0123456789";
if (!RELAY || !CONTROL) throw new Error("run through `go test -run TestJavaScriptSDK` (C2CVIA_RELAY and C2CVIA_CONTROL are unset)");

let nets = 0;
/** A net of its own for each test. */
const newNet = () => `js-${process.pid}-${++nets}`;

async function control(path) {
  const res = await fetch(CONTROL + path, { method: "POST" });
  assert.equal(res.status, 200, `control ${path}`);
  return res.json();
}
const advance = (by) => control(`/advance?by=${by}`);
const count = async (path, front = "relay") => (await control(`/count?path=${encodeURIComponent(path)}&front=${front}`)).count;

/** Waits until cond() holds, checking every 10 ms; fails after ms. */
async function until(cond, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A promise with resolve outside. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

/** Rejects with a clear message when p does not settle within ms. */
function within(p, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** A handler that says what it got, for the round trips. */
async function echo(req) {
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

test("serve and login().fetch: a request and its answer cross the relay whole", async (t) => {
  const net = newNet();
  const errors = [];
  const server = serve({ relay: RELAY, net, key: KEY, fetch: echo, wait: 5, onError: (e) => errors.push(e) });
  t.after(() => server.close());
  const s = await login({ relay: RELAY + "/", net }); // a trailing slash is fine
  t.after(() => s.close());
  assert.equal(s.net, net);
  assert.match(s.peerId, /^\S+$/);
  assert.ok(s.expiresAt instanceof Date && s.expiresAt.getTime() > 0);

  await t.test("method, escaped path, repeated query, headers, from", async () => {
    const headers = new Headers({ "X-One": "1", "C2cvia-From": "mallory" });
    headers.append("X-Multi", "a");
    headers.append("X-Multi", "b");
    const res = await s.fetch("/items/a%2Fb/c%20d?x=1&x=2&y=z", { method: "PATCH", headers, body: "patch me" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    const got = await res.json();
    assert.equal(got.method, "PATCH");
    assert.equal(got.path, "/items/a%2Fb/c%20d");
    assert.deepEqual(got.query, [["x", "1"], ["x", "2"], ["y", "z"]]);
    assert.equal(got.headers["x-one"], "1");
    assert.equal(got.headers["x-multi"], "a, b");
    assert.equal(got.headers["c2cvia-from"], s.peerId, "the relay's from, not the caller's header");
    assert.match(got.headers["c2cvia-rid"], /\S{10,}/);
    assert.equal(got.body, "patch me");
  });

  await t.test("GET without a body; a full URL's host is ignored", async () => {
    const got = await (await s.fetch("http://anything.example/items/7")).json();
    assert.equal(got.method, "GET");
    assert.equal(got.path, "/items/7");
    assert.equal(got.body, null);
  });

  await t.test("a JSON body keeps a 20-digit number digit for digit", async () => {
    const body = '{"big": 12345678901234567890, "nested": [1.5e300, {"n": -98765432109876543210}]}';
    const res = await s.fetch("/json", { method: "POST", headers: { "content-type": "application/json" }, body });
    const text = await res.text();
    assert.match(text, /12345678901234567890\b/);
    assert.match(text, /-98765432109876543210\b/);
    assert.deepEqual(JSON.parse(text), JSON.parse(body));
  });

  await t.test("text keeps its characters", async () => {
    const body = "héllo ✓ \u{1F600} <b>&amp;</b>";
    const got = await (await s.fetch("/text", { method: "PUT", headers: { "content-type": "text/plain; charset=utf-8" }, body })).json();
    assert.equal(got.body, body);
    assert.equal(got.headers["content-type"], "text/plain; charset=utf-8");
  });

  await t.test("random bytes both ways", async () => {
    const bytes = new Uint8Array(randomBytes(4096));
    const res = await s.fetch("/bin", { method: "POST", headers: { "content-type": "application/octet-stream" }, body: bytes });
    assert.equal(res.headers.get("content-type"), "application/octet-stream");
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.slice().reverse());
  });

  await t.test("204, and a custom status with a header", async () => {
    const none = await s.fetch("/nothing", { method: "DELETE" });
    assert.equal(none.status, 204);
    assert.equal(await none.text(), "");
    const tea = await s.fetch("/teapot");
    assert.equal(tea.status, 418);
    assert.equal(tea.headers.get("x-custom"), "yes");
    assert.equal(await tea.text(), "short and stout");
  });

  await t.test("plain fetch through the /via/ gateway: from is via", async () => {
    const res = await fetch(`${RELAY}/via/${net}/items/p%2Fq?x=1&x=2`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"n": 12345678901234567890}',
    });
    assert.equal(res.status, 200);
    const got = await res.json();
    assert.equal(got.path, "/items/p%2Fq");
    assert.deepEqual(got.query, [["x", "1"], ["x", "2"]]);
    assert.equal(got.headers["c2cvia-from"], "via");
    assert.equal(got.body, '{"n":12345678901234567890}', "the handler gets the JSON (as the relay stored it) with every digit");

    const bytes = new Uint8Array(randomBytes(1024));
    const bin = await fetch(`${RELAY}/via/${net}/bin`, { method: "POST", headers: { "content-type": "image/png" }, body: bytes });
    assert.deepEqual(new Uint8Array(await bin.arrayBuffer()), bytes.slice().reverse());
  });

  assert.deepEqual(errors, []);
});
