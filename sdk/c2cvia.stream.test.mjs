// Node tests of streamed answers and cancellation (docs/API.md, "Streamed
// answers and cancellation") through c2cvia.js's serve() and
// login().fetch, against a live relay.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { serve, login } from "./c2cvia.js";
import { RELAY, KEY, test, newNet, control, advance, count, until, deferred, within } from "./testenv.mjs";

const encoder = new TextEncoder();

/**
 * A body that gives each of parts in turn (a string, or a promise of one
 * the test resolves), then ends. cancelled resolves with the reason when
 * its reader cancels it.
 */
function events(parts) {
  const cancelled = deferred();
  let i = 0;
  const stream = new ReadableStream({
    async pull(c) {
      if (i === parts.length) return c.close();
      c.enqueue(encoder.encode(await parts[i++]));
    },
    cancel(reason) {
      cancelled.resolve(reason ?? "cancelled");
    },
  });
  return { stream, cancelled: cancelled.promise };
}

/** Reads from reader until the text read holds want; fails if the body ends first. */
async function readUntil(reader, want, got = { text: "" }) {
  const decoder = new TextDecoder();
  while (!got.text.includes(want)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the body ended before ${JSON.stringify(want)}: ${JSON.stringify(got.text)}`);
    got.text += decoder.decode(value, { stream: true });
  }
  return got.text;
}

/** The rest of reader's body as text. */
async function readRest(reader) {
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text + decoder.decode();
    text += decoder.decode(value, { stream: true });
  }
}

/** The reader of res's body, cancelled when the test ends: an open response would keep node from exiting. */
function bodyReader(t, res) {
  const reader = res.body.getReader();
  t.after(() => reader.cancel().catch(() => {}));
  return reader;
}

/** Resolves when sig aborts, with its reason. */
const aborted = (sig) => new Promise((resolve) => (sig.aborted ? resolve(sig.reason) : sig.addEventListener("abort", () => resolve(sig.reason), { once: true })));

const sse = { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" };

/**
 * A server whose handler answers /events with an event stream: the first
 * event at once, the second when the test resolves the returned gate.
 * Every other path answers "plain". handlers lists each /events call:
 * {request, release, cancelled}.
 */
function eventServer(t, net, options = {}) {
  const errors = [];
  const handlers = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e), ...options,
    fetch: (request) => {
      if (new URL(request.url).pathname !== "/events") return new Response("plain");
      const gate = deferred();
      const { stream, cancelled } = events(["data: one\n\n", gate.promise.then(() => "data: two\n\n")]);
      handlers.push({ request, release: gate.resolve, cancelled });
      return new Response(stream, { headers: sse });
    },
  });
  t.after(async () => {
    for (const h of handlers) h.release(); // a failed test must not leave streams open
    await server.close();
  });
  return { server, handlers, errors };
}

test("a streamed answer reaches a /via/ caller event by event", async (t) => {
  const net = newNet();
  const { handlers, errors } = eventServer(t, net);
  const parts = await count("/api/v1/server/pushpart");

  const res = await within(fetch(`${RELAY}/via/${net}/events`), 10_000, "the head, before the body ends");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("content-length"), null, "a stream has no length");
  const reader = bodyReader(t, res);
  const got = { text: "" };
  await within(readUntil(reader, "data: one\n\n", got), 10_000, "the first event while the second is held back");
  assert.equal(got.text, "data: one\n\n", "nothing of the second yet");
  assert.equal(handlers.length, 1);

  handlers[0].release();
  assert.equal(got.text + (await within(readRest(reader), 10_000, "the rest")), "data: one\n\ndata: two\n\n");
  assert.ok((await count("/api/v1/server/pushpart")) > parts, "the second event went as a part");
  assert.deepEqual(errors, []);
});

test("session.fetch reads a streamed body as it comes", async (t) => {
  const net = newNet();
  const { handlers, errors } = eventServer(t, net);
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const res = await within(s.fetch("/events"), 10_000, "the head, before the body ends");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("content-length"), null);
  const reader = bodyReader(t, res);
  const got = { text: "" };
  await within(readUntil(reader, "data: one\n\n", got), 10_000, "the first event while the second is held back");
  assert.equal(got.text, "data: one\n\n");

  handlers[0].release();
  assert.equal(got.text + (await within(readRest(reader), 10_000, "the rest")), "data: one\n\ndata: two\n\n");
  assert.deepEqual(errors, []);
});

test("open streams do not hold serve's slots: more of them than concurrency, and another request is answered", async (t) => {
  const net = newNet();
  const concurrency = 2;
  const { handlers, errors } = eventServer(t, net, { concurrency });

  const readers = [];
  for (let i = 0; i < concurrency + 1; i++) {
    const res = await within(fetch(`${RELAY}/via/${net}/events`), 10_000, `stream ${i + 1}'s head`);
    const reader = bodyReader(t, res);
    await within(readUntil(reader, "data: one\n\n"), 10_000, `stream ${i + 1}'s first event`);
    readers.push(reader);
  }
  assert.equal(handlers.length, concurrency + 1, "all streams open at once");
  const plain = await within(fetch(`${RELAY}/via/${net}/plain`), 10_000, "a request beside the open streams");
  assert.equal(await plain.text(), "plain");

  for (const h of handlers) h.release();
  for (const [i, reader] of readers.entries()) {
    assert.equal(await within(readRest(reader), 10_000, `stream ${i + 1}'s end`), "data: two\n\n");
  }
  assert.deepEqual(errors, []);
});

test("a /via/ caller that goes away aborts request.signal within a second", async (t) => {
  const net = newNet();
  const started = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: () => {},
    fetch: async (request) => {
      const path = new URL(request.url).pathname;
      const { stream, cancelled } = events(["data: one\n\n", new Promise(() => {})]);
      started.push({ request, cancelled });
      if (path === "/slow") await aborted(request.signal); // no answer until the caller has gone
      return new Response(stream, { headers: sse });
    },
  });
  t.after(() => server.close());

  await t.test("before any answer", async () => {
    const caller = new AbortController();
    const res = fetch(`${RELAY}/via/${net}/slow`, { signal: caller.signal });
    res.catch(() => {});
    await until(() => started.length === 1, "the handler running");
    const { request } = started[0];
    assert.equal(request.signal.aborted, false);
    caller.abort();
    const reason = await within(aborted(request.signal), 1000, "request.signal aborting");
    assert.equal(reason.name, "AbortError");
    await assert.rejects(res, { name: "AbortError" });
  });

  await t.test("while the answer streams", async () => {
    const caller = new AbortController();
    const res = await within(fetch(`${RELAY}/via/${net}/stream`, { signal: caller.signal }), 10_000, "the head");
    const reader = bodyReader(t, res);
    await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event");
    const { request, cancelled } = started[1];
    assert.equal(request.signal.aborted, false);
    caller.abort();
    await within(aborted(request.signal), 1000, "request.signal aborting");
    await within(cancelled, 1000, "the handler's body stream cancelled");
  });
});

test("session.fetch's AbortSignal and a cancelled body withdraw the request: the handler's signal aborts", async (t) => {
  const net = newNet();
  const started = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: () => {},
    fetch: async (request) => {
      const { stream, cancelled } = events(["data: one\n\n", new Promise(() => {})]);
      started.push({ request, cancelled });
      if (new URL(request.url).pathname === "/slow") await aborted(request.signal);
      return new Response(stream, { headers: sse });
    },
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  await t.test("aborted before the answer", async () => {
    const caller = new AbortController();
    const res = s.fetch("/slow", { signal: caller.signal });
    res.catch(() => {});
    await until(() => started.length === 1, "the handler running");
    caller.abort();
    await within(aborted(started[0].request.signal), 1000, "request.signal aborting");
    await assert.rejects(res, { name: "AbortError" });
  });

  await t.test("aborted while the body streams", async () => {
    const caller = new AbortController();
    const res = await within(s.fetch("/stream", { signal: caller.signal }), 10_000, "the head");
    const reader = bodyReader(t, res);
    await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event");
    const { request, cancelled } = started[1];
    caller.abort();
    await assert.rejects(reader.read(), { name: "AbortError" }, "the body errors");
    await within(aborted(request.signal), 1000, "request.signal aborting");
    await within(cancelled, 1000, "the handler's body stream cancelled");
  });

  await t.test("the body cancelled before its end", async () => {
    const res = await within(s.fetch("/stream"), 10_000, "the head");
    const reader = bodyReader(t, res);
    await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event");
    const { request, cancelled } = started[2];
    await reader.cancel();
    await within(aborted(request.signal), 1000, "request.signal aborting");
    await within(cancelled, 1000, "the handler's body stream cancelled");
  });

  // The session closed at once after the abort, or under a reader: the
  // withdrawal still goes out, and close() waits for it.
  for (const [i, how] of ["aborted, then the session closed at once", "the session closed under its reader"].entries()) {
    await t.test(how, async () => {
      const own = await login({ relay: RELAY, net });
      const caller = new AbortController();
      const res = await within(own.fetch("/stream", { signal: caller.signal }), 10_000, "the head");
      const reader = bodyReader(t, res);
      await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event");
      const { request, cancelled } = started[3 + i];
      if (i === 0) caller.abort();
      await within(own.close(), 10_000, "close()");
      await within(aborted(request.signal), 1000, "request.signal aborting");
      await within(cancelled, 1000, "the handler's body stream cancelled");
    });
  }
});

test("a 20 MB body streams byte-identical, in bounded parts", async (t) => {
  const size = 20 << 20;
  const bytes = new Uint8Array(randomBytes(size));
  const sha = (b) => createHash("sha256").update(b).digest("hex");
  const net = newNet();
  const errors = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    // 64 KiB chunks, one per pull, as a file or an upstream gives them.
    fetch: () => {
      let at = 0;
      const body = new ReadableStream({
        pull(c) {
          if (at === size) return c.close();
          c.enqueue(bytes.slice(at, (at += 64 << 10)));
        },
      });
      return new Response(body, { headers: { "Content-Type": "application/octet-stream" } });
    },
  });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());

  const parts = await count("/api/v1/server/pushpart");
  const via = await fetch(`${RELAY}/via/${net}/big`);
  assert.equal(via.status, 200);
  const got = new Uint8Array(await via.arrayBuffer());
  assert.equal(got.length, size);
  assert.equal(sha(got), sha(bytes), "through /via/");
  // At most 512 KiB a part: the head's and 39 more for 20 MiB.
  const sent = (await count("/api/v1/server/pushpart")) - parts;
  assert.ok(sent >= 39, `bounded parts: ${sent} pushparts`);

  const res = await s.fetch("/big");
  const again = new Uint8Array(await res.arrayBuffer());
  assert.equal(again.length, size);
  assert.equal(sha(again), sha(bytes), "through session.fetch");
  assert.deepEqual(errors, []);
  // 40 MB through the relay: 2-8 s, but over 30 s through a -race relay on
  // a loaded machine. The timeout only guards against a hang.
}, { timeout: 120_000 });

test("a part that fails is sent again at its offset: the answer arrives whole", async (t) => {
  const net = newNet();
  const bytes = new Uint8Array(randomBytes(3 << 20));
  const errors = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (e) => errors.push(e),
    fetch: () => new Response(bytes),
  });
  t.after(() => server.close());
  await control("/fail?path=/api/v1/server/pushpart&status=503&times=2");
  const res = await fetch(`${RELAY}/via/${net}/retried`);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  assert.deepEqual(errors, []);
});

test("an answer that ends at once and is small goes whole, in one pushres", async (t) => {
  const net = newNet();
  const server = serve({ relay: RELAY, net, key: KEY, wait: 5, fetch: () => new Response("all at once") });
  t.after(() => server.close());
  const parts = await count("/api/v1/server/pushpart");
  const res = await fetch(`${RELAY}/via/${net}/small`);
  assert.equal(await res.text(), "all at once");
  assert.equal(res.headers.get("content-length"), "11", "a whole answer has its length");
  assert.equal(await count("/api/v1/server/pushpart"), parts);
});

test("close() ends open streams: their signals abort, their bodies are cancelled, their callers see the end cut off", async (t) => {
  const net = newNet();
  const lease = 5; // seconds of the relay's clock
  const { server, handlers } = eventServer(t, net, { lease });
  const res = await within(fetch(`${RELAY}/via/${net}/events`), 10_000, "the /via/ head");
  const reader = bodyReader(t, res);
  await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event through /via/");
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  const sres = await within(s.fetch("/events"), 10_000, "the session's head");
  const sreader = bodyReader(t, sres);
  await within(readUntil(sreader, "data: one\n\n"), 10_000, "the first event through session.fetch");

  await within(server.close(), 5000, "close() with streams open");
  for (const h of handlers) {
    assert.equal(h.request.signal.aborted, true);
    await within(h.cancelled, 1000, "the body stream cancelled");
  }
  // Once the stream's lease has run out on the relay's clock, the callers'
  // bodies end without their last chunk: never a clean end.
  await advance(`${lease + 1}s`);
  const cut = (err) => !/timed out/.test(err.message);
  await assert.rejects(within(readRest(reader), 10_000, "the /via/ body's end"), cut);
  await assert.rejects(within(readRest(sreader), 10_000, "the session body's end"), (err) => {
    assert.equal(err.status, 502);
    assert.equal(err.code, "aborted");
    return true;
  });
});

test(
  "close() cuts an open stream's lease short: its caller sees the end within a second of the relay's clock",
  async (t) => {
    const net = newNet();
    const { server } = eventServer(t, net);
    const res = await within(fetch(`${RELAY}/via/${net}/events`), 10_000, "the head");
    const reader = bodyReader(t, res);
    await within(readUntil(reader, "data: one\n\n"), 10_000, "the first event");
    await within(server.close(), 5000, "close() with a stream open");
    await advance("1s");
    await assert.rejects(within(readRest(reader), 3000, "the body's end"), (err) => !/timed out/.test(err.message));
  },
);

test("a handler that rejects with its withdrawn request's reason is not reported; another rejection is", async (t) => {
  const net = newNet();
  const reported = [];
  const started = [];
  const server = serve({
    relay: RELAY, net, key: KEY, wait: 5, onError: (err) => reported.push(err),
    fetch: async (request) => {
      started.push(request);
      if (new URL(request.url).pathname === "/broken") throw new Error("broken handler");
      await aborted(request.signal);
      throw request.signal.reason; // the usual way to give up
    },
  });
  t.after(() => server.close());

  const caller = new AbortController();
  const res = fetch(`${RELAY}/via/${net}/slow`, { signal: caller.signal });
  res.catch(() => {});
  await until(() => started.length === 1, "the handler running");
  caller.abort();
  await within(aborted(started[0].signal), 1000, "request.signal aborting");
  const broken = await within(fetch(`${RELAY}/via/${net}/broken`), 10_000, "the broken handler's 500");
  assert.equal(broken.status, 500);
  await until(() => reported.length >= 1, "the broken handler reported");
  assert.deepEqual(reported.map((e) => e.message), ["broken handler"], "only the real failure is reported");
});
