// Node tests of c2cvia.js against a live relay. `go test -run
// TestJavaScriptSDK` starts the relay and runs them; the relay's clock is
// fake and moves only through the control server (see sdk_test.go).

import { test as nodeTest } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { serve, login, RelayError } from "./c2cvia.js";

const RELAY = process.env.C2CVIA_RELAY;
const FLAKY = process.env.C2CVIA_FLAKY;
const CONTROL = process.env.C2CVIA_CONTROL;
const KEY = process.env.C2CVIA_KEY ?? "test-key-0123456789";
if (!RELAY || !CONTROL) throw new Error("run through `go test -run TestJavaScriptSDK` (C2CVIA_RELAY and C2CVIA_CONTROL are unset)");

/** Every test ends within 30 s, failing, whatever it waits for. */
const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);

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
/** Calls to path through C2CVIA_RELAY that the relay has answered. */
const answered = async (path) => (await control(`/count?path=${encodeURIComponent(path)}&answered=1`)).count;

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

test("a handler that throws answers 500 and serving goes on", async (t) => {
  const net = newNet();
  const errors = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    fetch: (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/boom") throw new Error("boom");
      if (path === "/nothing") return "not a Response";
      return new Response("fine");
    },
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const boom = await s.fetch("/boom");
  assert.equal(boom.status, 500);
  assert.equal(boom.headers.get("content-type"), "text/plain");
  assert.equal(await boom.text(), "internal server error", "the error itself stays with the server");
  assert.equal((await s.fetch("/nothing")).status, 500);
  const ok = await s.fetch("/ok");
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), "fine");
  assert.equal(errors.length, 2);
  assert.equal(errors[0].message, "boom");
  assert.ok(errors[1] instanceof TypeError);
});

test("serve runs exactly `concurrency` handlers at once", async (t) => {
  const net = newNet();
  const concurrency = 3;
  const total = 7;
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  // The requests wait in the queue before serving starts, so a loop that
  // took more than its share would get them at once.
  const pushes = await count("/api/v1/client/pushreq");
  const answers = Array.from({ length: total }, (_, i) => s.fetch(`/job/${i}`));
  await until(async () => (await count("/api/v1/client/pushreq")) >= pushes + total, "the requests queued");

  let inFlight = 0;
  let peak = 0;
  const gates = [];
  const server = serve({
    relay: RELAY, net, key: KEY, concurrency, wait: 5,
    fetch: async (req) => {
      peak = Math.max(peak, ++inFlight);
      const gate = deferred();
      gates.push(gate);
      await gate.promise;
      inFlight--;
      return new Response(new URL(req.url).pathname);
    },
  });
  t.after(async () => {
    for (const g of gates) g.resolve(); // a failed test must not leave handlers waiting
    await server.close();
  });

  for (let released = 0; released < total; released++) {
    const expected = Math.min(concurrency, total - released);
    await until(() => gates.length >= released + expected, `${expected} handlers in flight`);
    assert.equal(inFlight, expected);
    gates[released].resolve(); // one finishes: one more may start
  }
  const bodies = await Promise.all(answers.map(async (p) => (await p).text()));
  assert.deepEqual(bodies, Array.from({ length: total }, (_, i) => `/job/${i}`));
  assert.equal(peak, concurrency);
  assert.equal(gates.length, total, "each request handled once");
});

test("a slow handler keeps its lease by extending it", async (t) => {
  const net = newNet();
  const errors = [];
  const started = deferred();
  const gate = deferred();
  let calls = 0;
  const lease = 1; // seconds: extended every 0.5 s of real time
  const server = serve({
    relay: RELAY, net, key: KEY, lease, concurrency: 2, wait: 5, onError: (e) => errors.push(e),
    fetch: async () => {
      calls++;
      started.resolve();
      await gate.promise;
      return new Response("slow but sure");
    },
  });
  t.after(async () => {
    gate.resolve(); // a failed test must not leave the handler waiting
    await server.close();
  });
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const answer = s.fetch("/slow");
  await within(started.promise, 10_000, "the handler to start");
  await advance("600ms"); // part of the lease; the SDK has not extended yet
  // An extend answered beyond those that had arrived by now was read at
  // the moved clock.
  const arrived = await count("/api/v1/server/extend");
  await until(async () => (await answered("/api/v1/server/extend")) > arrived, "an extend answered after the clock moved");
  await advance("600ms"); // past the original lease end, within the extended one

  // Not handed out again: neither to this loop nor to another SimServer.
  const res = await fetch(`${RELAY}/api/v1/server/pullreqsmart`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ net, wait: 0, max: 10 }),
  });
  assert.deepEqual((await res.json()).requests, [], "the request is still leased to the slow handler");
  assert.equal(calls, 1);

  gate.resolve();
  const got = await answer;
  assert.equal(await got.text(), "slow but sure");
  await server.close();
  assert.deepEqual(errors, [], "the answer was accepted");
  assert.equal(calls, 1);
});

test("serve backs off while the relay is unreachable and serves once it is back", async (t) => {
  const net = newNet();
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  const answer = s.fetch("/after-outage"); // stored at the relay, which is fine

  const poll = "/api/v1/server/pullreqsmart";
  await control("/flaky?mode=drop");
  t.after(() => control("/flaky?mode=up"));
  const before = await count(poll, "flaky");
  const server = serve({ relay: FLAKY, net, key: KEY, wait: 5, onError: () => {}, fetch: () => new Response("back") });
  t.after(() => server.close());

  // Two seconds of refused connections, then 503s until one more attempt:
  // with backoff from 250 ms doubling, that is at most 6 attempts in all
  // (a loop without backoff makes hundreds).
  await new Promise((r) => setTimeout(r, 2000));
  await control("/flaky?mode=503");
  const dropped = (await count(poll, "flaky")) - before;
  await until(async () => (await count(poll, "flaky")) > before + dropped, "an attempt answered 503");
  const attempts = (await count(poll, "flaky")) - before;
  await control("/flaky?mode=up");
  assert.ok(dropped >= 2, `retried while refused: ${dropped} attempts`);
  assert.ok(attempts <= 6, `attempts are spaced: ${attempts} in the outage`);

  const res = await within(answer, 15_000, "the request served after the outage");
  assert.equal(await res.text(), "back");
});

test("fatal relay errors end serve; close() stops polling", async (t) => {
  const net = newNet();
  // Claim the net with the right key first.
  const claim = await fetch(`${RELAY}/api/v1/server/pullreqsmart`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ net, wait: 0 }),
  });
  assert.equal(claim.status, 200);

  const cases = [
    { name: "wrong key", net, key: "another-key-0123456789", status: 403, code: "wrong_key" },
    { name: "bad net", net: "no spaces", key: KEY, status: 400, code: "invalid_net" },
    { name: "no key", net, key: "", status: 401, code: "missing_key" },
  ];
  for (const c of cases) {
    const server = serve({ relay: RELAY, net: c.net, key: c.key, wait: 5, fetch: () => new Response("") });
    t.after(() => server.close()); // if it failed to stop by itself
    await assert.rejects(within(server.closed, 5000, c.name), (err) => {
      assert.ok(err instanceof RelayError, c.name);
      assert.equal(err.status, c.status, c.name);
      assert.equal(err.code, c.code, c.name);
      return true;
    });
    await server.close(); // resolves after a fatal error too
  }

  const poll = "/api/v1/server/pullreqsmart";
  const before = await count(poll);
  const server = serve({ relay: RELAY, net, key: KEY, wait: 25, fetch: () => new Response("") });
  t.after(() => server.close());
  await until(async () => (await count(poll)) > before, "serve polling");
  await within(server.close(), 5000, "close() aborting a 25 s poll");
  await within(server.closed, 1000, "closed resolving");
  const after = await count(poll);
  // Longer than the shortest backoff: a loop still running would have polled.
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(await count(poll), after, "no poll after close()");
});

test("peer messages between sessions, in order, by long poll, with resume", async (t) => {
  assert.equal(globalThis.EventSource, undefined, "node has no EventSource: messages() long-polls");
  const net = newNet();
  const ada = await login({ relay: RELAY, net });
  const bob = await login({ relay: RELAY, net });
  t.after(() => ada.close());
  t.after(() => bob.close());

  assert.deepEqual(await bob.subscribe("news"), { topic: "news", subscribed: true });
  const sent = await ada.send(bob.peerId, { text: "hi Bob" });
  assert.ok(Number.isInteger(sent.id));
  assert.deepEqual(Object.keys(await ada.publish("news", [1, 2])), ["id", "receivers"]);
  assert.equal((await ada.broadcast("lunch?")).receivers, 1);
  assert.deepEqual(await bob.unsubscribe("news"), { topic: "news", subscribed: false });
  assert.equal((await ada.publish("news", "not for Bob")).receivers, 0);
  await ada.send(bob.peerId, "last");

  const want = [
    { kind: "unicast", topic: null, data: { text: "hi Bob" } },
    { kind: "multicast", topic: "news", data: [1, 2] },
    { kind: "broadcast", topic: null, data: "lunch?" },
    { kind: "unicast", topic: null, data: "last" },
  ];
  const got = [];
  for await (const m of bob.messages()) {
    got.push(m);
    if (got.length === want.length) break;
  }
  assert.deepEqual(got.map(({ kind, topic, data }) => ({ kind, topic, data })), want);
  for (const m of got) {
    assert.equal(m.from, ada.peerId);
    assert.ok(m.sentAt instanceof Date && !Number.isNaN(m.sentAt.getTime()));
  }
  assert.ok(got.every((m, i) => i === 0 || m.id > got[i - 1].id), "ids increase");
  assert.equal(got[0].id, sent.id);

  // A second iterator resumes after a given id.
  const it = bob.messages({ since: got[1].id });
  assert.deepEqual((await it.next()).value.data, "lunch?");
  assert.deepEqual((await it.next()).value.data, "last");

  // The relay fails one poll: the iterator backs off and goes on after the
  // last message, nothing lost, nothing twice.
  const pulls = await count("/api/v1/peer/pullsmart");
  await control("/fail?path=/api/v1/peer/pullsmart&status=503&times=1");
  await ada.send(bob.peerId, "after the failure");
  await ada.broadcast("and another");
  assert.equal((await within(it.next(), 10_000, "a message after the 503")).value.data, "after the failure");
  assert.equal((await it.next()).value.data, "and another");
  assert.ok((await count("/api/v1/peer/pullsmart")) >= pulls + 2, "the failed poll was asked again");
  await ada.send(bob.peerId, "one more");
  assert.equal((await within(it.next(), 10_000, "the next message")).value.data, "one more");
  assert.deepEqual(await it.return(), { value: undefined, done: true });
  assert.deepEqual(await it.next(), { value: undefined, done: true });
});

/**
 * A minimal EventSource on fetch streaming, as browsers behave: reconnects
 * with Last-Event-ID after a cut, and gives up (CLOSED) on a response that
 * is not an event stream.
 */
class TestEventSource {
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

test("messages() uses EventSource where it exists, resuming by Last-Event-ID", async (t) => {
  globalThis.EventSource = TestEventSource;
  t.after(() => delete globalThis.EventSource);
  const net = newNet();
  const ada = await login({ relay: RELAY, net });
  const bob = await login({ relay: RELAY, net });
  t.after(() => ada.close());
  t.after(() => bob.close());
  const polls = await count("/api/v1/peer/pullsmart");

  await ada.send(bob.peerId, 1);
  await ada.broadcast(2);
  const it = bob.messages();
  const m1 = (await within(it.next(), 10_000, "the first event")).value;
  const m2 = (await it.next()).value;
  assert.deepEqual([m1.data, m1.kind, m2.data, m2.kind], [1, "unicast", 2, "broadcast"]);
  assert.equal(TestEventSource.instances.length, 1);
  const es = TestEventSource.instances[0];
  const url = new URL(es.url);
  assert.equal(url.pathname, "/api/v1/peer/stream");
  assert.equal(url.searchParams.get("token"), bob.token);
  assert.equal(url.searchParams.get("since"), null, "from the oldest kept message");

  // A cut: the EventSource reconnects with Last-Event-ID, and the stream
  // goes on after it.
  es.cut();
  await ada.send(bob.peerId, 3);
  const m3 = (await within(it.next(), 10_000, "an event after the cut")).value;
  assert.equal(m3.data, 3);
  assert.deepEqual(es.connects, ["", String(m2.id)]);

  // The relay answers 503 once: the EventSource gives up; messages()
  // opens a new one after the last message, nothing lost or twice.
  // It gives up before anyone iterates: messages() must not wait for a
  // wake-up that came before it looked.
  await control("/fail?path=/api/v1/peer/stream&status=503&times=1");
  es.cut();
  await until(() => es.readyState === 2, "the EventSource to give up");
  await ada.send(bob.peerId, 4);
  await ada.send(bob.peerId, 5);
  const m4 = (await within(it.next(), 10_000, "an event after the 503")).value;
  const m5 = (await it.next()).value;
  assert.deepEqual([m4.data, m5.data], [4, 5]);
  assert.equal(es.readyState, 2);
  assert.equal(TestEventSource.instances.length, 2);
  const es2 = TestEventSource.instances[1];
  assert.equal(new URL(es2.url).searchParams.get("since"), String(m3.id));
  assert.equal(await count("/api/v1/peer/pullsmart"), polls + 1, "one poll asked the relay what went wrong");
  await it.return();
  assert.equal(es2.readyState, 2, "return() closes the stream");

  // since on a new iterator; break closes its stream.
  for await (const m of bob.messages({ since: m3.id })) {
    assert.equal(m.data, 4);
    break;
  }
  assert.equal(TestEventSource.instances.length, 3);
  assert.equal(new URL(TestEventSource.instances[2].url).searchParams.get("since"), String(m3.id));
  assert.equal(TestEventSource.instances[2].readyState, 2, "break closes the stream");
});

test("relay failures reject with RelayError", async (t) => {
  await assert.rejects(login({ relay: RELAY, net: "not a net!" }), (err) => {
    assert.ok(err instanceof RelayError && err instanceof Error);
    assert.deepEqual([err.status, err.code, err.name], [400, "invalid_net", "RelayError"]);
    assert.match(err.message, /net must be/);
    return true;
  });

  const net = newNet();
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  await assert.rejects(s.send("no-such-peer", { hi: 1 }), { name: "RelayError", status: 404, code: "unknown_peer" });
  await assert.rejects(s.subscribe("bad topic"), { status: 400, code: "invalid_topic" });

  // No SimServer: the request expires while session.fetch waits for it.
  const pushes = await count("/api/v1/client/pushreq");
  const polls = await count("/api/v1/client/pullsmart");
  const answer = s.fetch("/never");
  await until(async () => (await count("/api/v1/client/pushreq")) > pushes, "the request stored");
  await until(async () => (await count("/api/v1/client/pullsmart")) > polls, "the answer awaited");
  // Await the rejection from now on: it may come before advance() returns.
  const expired = assert.rejects(within(answer, 10_000, "the expiry"), { name: "RelayError", status: 410, code: "expired" });
  await advance("6m"); // past the 5 min request TTL
  await expired;

  // A failure that is not the relay's JSON shape: code http_<status>.
  await control("/flaky?mode=503");
  t.after(() => control("/flaky?mode=up"));
  await assert.rejects(login({ relay: FLAKY, net }), { name: "RelayError", status: 503, code: "http_503" });
});

test("session.close() ends open iterators and aborts pending fetches", async (t) => {
  const net = newNet();
  const s = await login({ relay: RELAY, net });
  const clientPolls = await count("/api/v1/client/pullsmart");
  const peerPolls = await count("/api/v1/peer/pullsmart");

  const it = s.messages();
  const pending = it.next();
  const answer = s.fetch("/nobody-serves-this");
  const aborted = new AbortController();
  const other = s.fetch("/nor-this", { signal: aborted.signal });
  await until(async () => (await count("/api/v1/client/pullsmart")) >= clientPolls + 2, "both fetches waiting");
  await until(async () => (await count("/api/v1/peer/pullsmart")) > peerPolls, "the iterator waiting");

  aborted.abort();
  await assert.rejects(within(other, 2000, "init.signal"), { name: "AbortError" });

  s.close();
  assert.deepEqual(await within(pending, 2000, "the iterator ending"), { value: undefined, done: true });
  await assert.rejects(within(answer, 2000, "the fetch aborting"), { name: "AbortError" });
  for await (const m of s.messages()) assert.fail(`no message after close: ${m}`);

  // return() releases a waiting iterator at once, not after the 25 s poll.
  const s2 = await login({ relay: RELAY, net });
  t.after(() => s2.close());
  const it2 = s2.messages();
  const waiting = it2.next();
  await until(async () => (await count("/api/v1/peer/pullsmart")) > peerPolls + 1, "the second iterator waiting");
  await within(it2.return(), 2000, "return()");
  assert.deepEqual(await within(waiting, 2000, "the waiting next()"), { value: undefined, done: true });
});
