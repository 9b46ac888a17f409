// Node tests of serve() in the shape of Deno.serve: the handler's info
// (signal, completed), serve's signal, and onError's Response.

import assert from "node:assert/strict";
import { serve, login } from "./c2cvia.js";
import { RELAY, KEY, test, newNet, count, until, deferred, within } from "./testenv.mjs";

const encoder = new TextEncoder();

/** A session of net, closed after the test. */
async function session(t, net) {
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  return s;
}

/** Whether p has settled, and how, as of now (after pending microtasks). */
async function state(p) {
  const marker = Symbol("pending");
  return Promise.race([p.then(() => "resolved", () => "rejected"), new Promise((r) => setImmediate(() => r(marker)))]).then((v) => (v === marker ? "pending" : v));
}

test("info.signal is request.signal and info.completed resolves once the whole answer is sent", async (t) => {
  const net = newNet();
  const infos = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5,
    fetch: (req, info) => {
      infos.push({ req, info });
      return new Response("done");
    },
  });
  t.after(() => server.close());
  const s = await session(t, net);

  assert.equal(await (await s.fetch("/whole")).text(), "done");
  const { req, info } = infos[0];
  assert.equal(info.signal, req.signal);
  assert.ok(info.signal instanceof AbortSignal);
  assert.ok(info.completed instanceof Promise);
  await within(info.completed, 10_000, "info.completed of a whole answer");
  assert.equal(info.signal.aborted, false);
  assert.deepEqual(Object.keys(info).sort(), ["completed", "from", "remoteAddr", "rid", "signal", "target"]);
});

test("info.completed of a streamed answer settles at its end; it rejects when the caller withdraws", async (t) => {
  const net = newNet();
  const streams = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: () => {},
    fetch: (req, info) => {
      let ctrl;
      const body = new ReadableStream({ start: (c) => ((ctrl = c), c.enqueue(encoder.encode("first "))) });
      streams.push({ info, end: () => (ctrl.enqueue(encoder.encode("last")), ctrl.close()) });
      return new Response(body);
    },
  });
  t.after(() => server.close());
  const s = await session(t, net);

  const res = await s.fetch("/stream");
  const reader = res.body.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "first ");
  const { info, end } = streams[0];
  assert.equal(await state(info.completed), "pending", "the answer has not ended");
  end();
  let text = "";
  for (let r; !(r = await reader.read()).done; ) text += new TextDecoder().decode(r.value);
  assert.equal(text, "last");
  await within(info.completed, 10_000, "info.completed once the last part is in");

  // Withdrawn: the caller aborts mid-stream.
  const abort = new AbortController();
  const res2 = await s.fetch("/stream", { signal: abort.signal });
  await res2.body.getReader().read();
  const second = streams[1].info;
  abort.abort();
  await assert.rejects(within(second.completed, 10_000, "info.completed of a withdrawn answer"), { name: "AbortError" });
  assert.equal(second.signal.aborted, true);
});

test("serve's signal stops serving as close() does", async (t) => {
  const net = newNet();
  const ac = new AbortController();
  const started = deferred();
  const release = deferred();
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, signal: ac.signal,
    fetch: async () => {
      started.resolve();
      await release.promise;
      return new Response("answered before closing");
    },
  });
  t.after(() => server.close());
  const s = await session(t, net);

  const res = s.fetch("/slow");
  await within(started.promise, 10_000, "the handler to start");
  ac.abort();
  assert.equal(await state(server.closed), "pending", "closed waits for the running handler");
  release.resolve();
  await within(server.closed, 10_000, "closed after the abort");
  assert.equal(await (await res).text(), "answered before closing");

  // An aborted signal: serve never polls.
  const before = await count("/api/v1/server/pullreqsmart");
  const idle = serve({ relay: RELAY, net, key: KEY, signal: AbortSignal.abort(), fetch: () => new Response() });
  await within(idle.closed, 10_000, "closed at once");
  assert.equal(await count("/api/v1/server/pullreqsmart"), before);
  assert.throws(() => serve({ relay: RELAY, net, key: KEY, signal: "stop", fetch: () => new Response() }), TypeError);
});

test("onError's Response answers a handler that threw, instead of the 500", async (t) => {
  const net = newNet();
  const reported = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5,
    fetch: (req) => {
      throw new Error(new URL(req.url).pathname);
    },
    onError: (err) => {
      reported.push(err.message);
      switch (err.message) {
        case "/response":
          return new Response("sorry", { status: 503, headers: { "Retry-After": "3" } });
        case "/promise":
          return Promise.resolve(Response.json({ error: "later" }, { status: 502 }));
        case "/throws":
          throw new Error("onError failed");
        case "/rejects":
          return Promise.reject(new Error("onError failed"));
        case "/not-response":
          return "no Response";
        default:
          return undefined;
      }
    },
  });
  t.after(() => server.close());
  const s = await session(t, net);

  const sorry = await s.fetch("/response");
  assert.deepEqual([sorry.status, sorry.headers.get("retry-after"), await sorry.text()], [503, "3", "sorry"]);
  const later = await s.fetch("/promise");
  assert.deepEqual([later.status, await later.json()], [502, { error: "later" }]);
  for (const path of ["/throws", "/rejects", "/not-response", "/nothing"]) {
    const res = await s.fetch(path);
    assert.deepEqual([res.status, await res.text()], [500, "internal server error"], path);
  }
  assert.deepEqual(reported, ["/response", "/promise", "/throws", "/rejects", "/not-response", "/nothing"]);
});

test("a handler that gives up with its withdrawn request's reason reaches no onError", async (t) => {
  const net = newNet();
  const reported = [];
  const started = deferred();
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => (reported.push(e), new Response("not for anyone")),
    fetch: (req, info) =>
      new Promise((_, reject) => {
        started.resolve();
        info.signal.addEventListener("abort", () => reject(info.signal.reason));
      }),
  });
  t.after(() => server.close());
  const s = await session(t, net);
  const abort = new AbortController();
  const cancels = await count("/api/v1/client/cancel");
  const res = s.fetch("/wait", { signal: abort.signal });
  await within(started.promise, 10_000, "the handler to start");
  abort.abort();
  await assert.rejects(res, { name: "AbortError" });
  await until(async () => (await count("/api/v1/client/cancel")) > cancels, "the withdrawal");
  await server.close();
  assert.deepEqual(reported, []);
});
