// Node tests of c2cvia.js's serve() and login().fetch against a live relay.
// `go test -run TestJavaScriptSDK` starts the relay and runs them; the
// relay's clock is fake and moves only through the control server.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { serve, login, RelayError } from "./c2cvia.js";
import { RELAY, FLAKY, CONTROL, KEY, test, newNet, control, advance, count, answered, until, deferred, within, echo } from "./testenv.mjs";

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
