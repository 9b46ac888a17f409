// Node tests of c2cvia.js's serve() and login().fetch against a live relay.
// `go test -run TestJavaScriptSDK` starts the relay and runs them; the
// relay's clock is fake and moves only through the control server.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { serve, login, RelayError, __mapping } from "./c2cvia.js";
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

  await t.test("GET without a body; a full URL's host is the Host", async () => {
    const got = await (await s.fetch("http://anything.example/items/7")).json();
    assert.equal(got.method, "GET");
    assert.equal(got.path, "/items/7");
    assert.equal(got.headers.host, "anything.example");
    assert.equal(got.headers["content-length"], undefined);
    assert.equal(got.body, null);
  });

  await t.test("a JSON body travels as its exact text, every digit and space kept", async () => {
    const body = '{"big": 12345678901234567890, "nested": [1.5e300, {"n": -98765432109876543210}]}\n';
    const res = await s.fetch("/json", { method: "POST", headers: { "content-type": "application/json" }, body });
    assert.equal(await res.text(), body);
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
    assert.equal(got.body, '{"n": 12345678901234567890}', "the handler gets the exact bytes");

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

test("the handler gets the request the caller sent, and info says who sent it", async (t) => {
  const net = newNet();
  const errors = [];
  const seen = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    fetch: async (req, info) => {
      seen.push({ req, info, body: new Uint8Array(await req.arrayBuffer()) });
      const headers = new Headers({ "Content-Type": "application/json", "X-Legacy": "caf\xe9" });
      headers.append("Set-Cookie", "a=1; Path=/");
      headers.append("Set-Cookie", "b=2");
      return new Response('{"n": 12345678901234567890 }', { status: 201, headers });
    },
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const body = '{\n  "sig": "over these exact bytes", "n": 1.50\n}';
  const res = await s.fetch("http://shop.example:8443/api//x/./y/../z?b=2&a=1&a=0", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Forwarded-Proto": "https", "X-Legacy": "caf\xe9", "X-Name": "Jos\xc3\xa9" },
    body,
  });
  assert.equal(res.status, 201);
  assert.equal(await res.text(), '{"n": 12345678901234567890 }');
  assert.equal(res.headers.get("x-legacy"), "caf\xe9", "a header that is not UTF-8 comes back as its bytes");
  assert.deepEqual(res.headers.getSetCookie(), ["a=1; Path=/", "b=2"]);

  assert.equal(seen.length, 1);
  const { req, info } = seen[0];
  // The URL parser removes dot segments from req.url; info.target keeps them.
  assert.equal(req.url, "https://shop.example:8443/api//x/z?b=2&a=1&a=0", "the scheme and host the caller asked for");
  assert.equal(info.target, "/api//x/./y/../z?b=2&a=1&a=0");
  assert.equal(req.method, "POST");
  assert.equal(req.headers.get("host"), "shop.example:8443");
  assert.equal(req.headers.get("x-legacy"), "caf\xe9");
  assert.equal(req.headers.get("x-name"), "Jos\xc3\xa9", "a UTF-8 value is its bytes, as a web server hands it over");
  assert.equal(req.headers.get("content-type"), "application/json");
  assert.equal(req.headers.get("content-length"), String(new TextEncoder().encode(body).length));
  assert.equal(new TextDecoder().decode(seen[0].body), body, "the exact bytes");
  assert.equal(info.from, s.peerId);
  assert.equal(info.rid, req.headers.get("c2cvia-rid"));
  assert.match(info.rid, /\S{10,}/);
  assert.deepEqual(errors, []);
});

test("info.remoteAddr is the caller's address as the relay saw it, a Deno.NetAddr", async (t) => {
  const net = newNet();
  const infos = [];
  const server = serve({ relay: RELAY, net, key: KEY, wait: 5, fetch: (req, info) => (infos.push(info), new Response("ok")) });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  assert.equal(await (await s.fetch("/by-session")).text(), "ok");
  assert.equal(await (await fetch(`${RELAY}/via/${net}/by-gateway`)).text(), "ok");
  assert.equal(infos.length, 2);
  for (const { remoteAddr } of infos) {
    assert.deepEqual(Object.keys(remoteAddr).sort(), ["hostname", "port", "transport"]);
    assert.equal(remoteAddr.transport, "tcp");
    assert.match(remoteAddr.hostname, /^(127\.0\.0\.1|::1)$/, "no brackets around an IPv6 address");
    assert.ok(Number.isInteger(remoteAddr.port) && remoteAddr.port > 0 && remoteAddr.port < 65536);
  }
});

test("info.remoteAddr of each shape a relay gives", () => {
  const addr = __mapping.netAddr;
  assert.deepEqual(addr("203.0.113.7:51234"), { transport: "tcp", hostname: "203.0.113.7", port: 51234 });
  assert.deepEqual(addr("[2001:db8::1]:443"), { transport: "tcp", hostname: "2001:db8::1", port: 443 });
  assert.deepEqual(addr("198.51.100.2:0"), { transport: "tcp", hostname: "198.51.100.2", port: 0 }, "behind --trust-proxy");
  const unknown = { transport: "tcp", hostname: undefined, port: undefined };
  for (const told of [undefined, null, "", "no-port", "1.2.3.4:99999", "[::1]", 42]) assert.deepEqual(addr(told), unknown, String(told));
});

test("an answer whose head is too large for the relay reaches the caller as 502 response_too_large, once", async (t) => {
  const net = newNet();
  const errors = [];
  let calls = 0;
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    // A 2 MiB header: over any head the test relay's 1 MiB --max-body
    // takes, whole or streamed (a body of any size streams).
    fetch: () => (calls++, new Response("small", { headers: { "X-Huge": "a".repeat(2 << 20) } })),
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const res = await s.fetch("/huge");
  assert.equal(res.status, 502);
  assert.equal(res.headers.get("content-type"), "application/json");
  const got = await res.json();
  assert.equal(got.error.code, "response_too_large");
  assert.equal(typeof got.error.message, "string");
  assert.equal(calls, 1, "the handler ran once");
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof RelayError && errors[0].status === 413, "the relay's refusal goes to onError");
});

test("an answer larger than the relay takes whole streams, byte-identical, the handler run once", async (t) => {
  const net = newNet();
  const errors = [];
  let calls = 0;
  const bytes = new Uint8Array(3 << 20).fill(0xff); // 4 MiB of base64: over any whole answer the test relay takes
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    fetch: () => (calls++, new Response(bytes)),
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const res = await s.fetch("/huge");
  assert.equal(res.status, 200);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  assert.equal(calls, 1);
  assert.deepEqual(errors, []);
});

test("an answer as large as the largest request body after base64 passes", async (t) => {
  const net = newNet();
  const errors = [];
  const bytes = new Uint8Array(randomBytes(1000 << 10)); // under --max-body (1 MiB); its base64 is over it
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    fetch: () => new Response(bytes, { headers: { "Content-Type": "application/octet-stream" } }),
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const res = await s.fetch("/big");
  assert.equal(res.status, 200);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  assert.deepEqual(errors, []);
});

/** A browser's CORS preflight for a PUT to path, through the gateway. */
const preflightTo = (url) =>
  fetch(url, { method: "OPTIONS", headers: { Origin: "https://app.example", "Access-Control-Request-Method": "PUT" } });

test("without preflight the relay answers the gateway's CORS preflights itself", async (t) => {
  const net = newNet();
  const methods = [];
  const server = serve({ relay: RELAY, net, key: KEY, wait: 5, fetch: (req) => (methods.push(req.method), new Response("ok")) });
  t.after(() => server.close());

  const res = await preflightTo(`${RELAY}/via/${net}/items`);
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-methods"), "PUT");
  assert.equal(await (await fetch(`${RELAY}/via/${net}/items`)).text(), "ok", "serving");
  assert.deepEqual(methods, ["GET"], "the handler saw no preflight");
});

test("serve({preflight: true}) gets the gateway's CORS preflights", async (t) => {
  const net = newNet();
  const seen = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, preflight: true,
    fetch: (req) => {
      seen.push([req.method, req.headers.get("access-control-request-method")]);
      if (req.method !== "OPTIONS") return new Response("ok");
      return new Response(null, { status: 204, headers: { "Access-Control-Allow-Methods": "GET, PUT", "Access-Control-Allow-Origin": "https://app.example" } });
    },
  });
  t.after(() => server.close());
  // A first request is answered by a poll that asked for preflights: from
  // then on the relay forwards them.
  assert.equal(await (await fetch(`${RELAY}/via/${net}/items`)).text(), "ok");

  const res = await preflightTo(`${RELAY}/via/${net}/items`);
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-methods"), "GET, PUT", "the SimServer's answer");
  assert.deepEqual(seen, [["GET", null], ["OPTIONS", "PUT"]]);
});

test("the /via/ gateway hands the handler a JSON body as its exact bytes", async (t) => {
  const net = newNet();
  const server = serve({ relay: RELAY, net, key: KEY, wait: 5, fetch: echo });
  t.after(() => server.close());
  const body = '{"n": 12345678901234567890,\n "s": "é"}';
  const res = await fetch(`${RELAY}/via/${net}/hook`, { method: "POST", headers: { "content-type": "application/json" }, body });
  assert.equal((await res.json()).body, body);
});
