// Node tests of serve() answering with its polls (docs/API.md, "Answering
// and polling in one call"): a whole answer ready when the loop polls goes
// with that poll, one ready while a poll waits goes by pushres at once.
// serve() reaches the relay through a front of each test's own, which
// records every call with what it carried and what the relay replied.

import assert from "node:assert/strict";
import http from "node:http";
import { serve, login } from "./c2cvia.js";
import { RELAY, KEY, test, newNet, deferred, within } from "./testenv.mjs";

const POLL = "/api/v1/server/pullreqsmart";
const PUSHRES = "/api/v1/server/pushres";
const PUSHREQ = "/api/v1/client/pushreq";
const CANCEL = "/api/v1/client/cancel";
const WATCH = "/api/v1/server/watch";

/**
 * @typedef {object} Call
 * @property {string} path
 * @property {any} body the JSON body as sent (null for none)
 * @property {number | undefined} status the relay's, once it replied
 * @property {any} reply the relay's JSON reply, once it replied
 * @property {() => void} cut closes the caller's connection unanswered (the relay's wait ends with it)
 */

/**
 * Starts a front of the relay: every call is forwarded and recorded (a
 * Call). hold(path) keeps that path's calls from the relay: they wait
 * until their caller goes. forward(call) may return the JSON body to
 * send instead of call.body; refuse(call) a {status, code} to answer
 * without the relay. when(cond, what) resolves with cond()'s value once it
 * is truthy, looked at as each call arrives and as the relay replies;
 * next(match, what) with the first call that matches.
 */
async function newFront() {
  /** @type {Call[]} */
  const calls = [];
  const waiters = new Set();
  const held = new Set();
  const front = {
    calls,
    /** @type {(call: Call) => any} */
    forward: () => undefined,
    /** @type {(call: Call) => {status: number, code: string} | undefined} */
    refuse: () => undefined,
    hold: (path) => held.add(path),
    when(cond, what, ms = 5000) {
      const now = cond();
      if (now) return Promise.resolve(now);
      const w = { cond, ...deferred() };
      waiters.add(w);
      return within(w.promise, ms, what).finally(() => waiters.delete(w));
    },
    /** @returns {Promise<Call>} */
    next: (match, what, ms) => front.when(() => calls.find(match), what, ms),
    /** The calls to path. */
    to: (path) => calls.filter((c) => c.path === path),
  };
  const changed = () => {
    for (const w of waiters) {
      const v = w.cond();
      if (v) waiters.delete(w), w.resolve(v);
    }
  };

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks);
    let body = null;
    try {
      body = raw.length ? JSON.parse(raw.toString()) : null;
    } catch {
      // not JSON: pushpart's bytes
    }
    const upstream = new AbortController();
    res.on("close", () => upstream.abort()); // its caller went: so does the relay's wait
    /** @type {Call} */
    const call = { path: new URL(req.url, RELAY).pathname, body, status: undefined, reply: undefined, cut: () => res.destroy() };
    calls.push(call);
    changed();
    if (held.has(call.path)) return;
    const refusal = front.refuse(call);
    if (refusal) {
      res.writeHead(refusal.status, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { code: refusal.code, message: "refused by the test's front" } }));
      return;
    }
    const instead = front.forward(call);
    const headers = {};
    for (const name of ["content-type", "authorization"]) if (req.headers[name]) headers[name] = req.headers[name];
    try {
      const r = await fetch(RELAY + req.url, {
        method: req.method,
        headers,
        body: instead !== undefined ? JSON.stringify(instead) : raw.length ? raw : undefined,
        signal: upstream.signal,
      });
      const text = await r.text();
      call.status = r.status;
      try {
        call.reply = JSON.parse(text);
      } catch {
        call.reply = text;
      }
      const out = { "Content-Type": r.headers.get("content-type") ?? "application/json" };
      if (r.headers.has("retry-after")) out["Retry-After"] = r.headers.get("retry-after");
      res.writeHead(r.status, out);
      res.end(text);
    } catch {
      res.destroy();
    } finally {
      changed();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  front.url = `http://127.0.0.1:${server.address().port}`;
  front.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  return front;
}

/**
 * What t.after runs, last registered first: serve() and sessions close
 * before the front they talk through. One that hangs fails the test.
 */
function cleanups(t) {
  const fns = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await within(Promise.resolve(fn()), 10_000, "closing");
  });
  return (fn) => fns.push(fn);
}

/** close() waits for every handler to post its answer: none is left waiting for an outcome. */
const closes = (server) => within(server.close(), 5000, "close(), once every answer is settled");

/** The rids of the answers a poll carried. */
const carried = (call) => (call.body?.answers ?? []).map((a) => a.rid);

/** A handler that answers at once with its path, and records the rid of each path. */
function quick() {
  const rids = new Map();
  const fetch = (req, info) => {
    const path = new URL(req.url).pathname;
    assert.ok(!rids.has(path), `${path} handled once`);
    rids.set(path, info.rid);
    return new Response(`answer to ${path}`);
  };
  return { rids, fetch };
}

/** Waits until n pushreqs to front were taken. */
const queued = (front, n) => front.when(() => front.to(PUSHREQ).filter((c) => c.status === 201).length >= n, `${n} requests queued`);

test("a quick handler's answers go with the polls, not by pushres: one round trip each, every caller its own", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  const errors = [];
  const h = quick();
  const s = await login({ relay: front.url, net });
  later(() => s.close());

  // Requests that wait for the loop come 4 to a poll (its concurrency), and
  // their answers go back together with the next.
  const burst = 10;
  const answers = Array.from({ length: burst }, (_, i) => s.fetch(`/burst/${i}`));
  await queued(front, burst);
  // A linger far longer than the test: the answers are in the polls because
  // the loop waits for the handlers it just started, which ends as soon as
  // they answer (or each request would take 10 s, past its deadline).
  const server = serve({ relay: front.url, net, key: KEY, wait: 5, linger: 10_000, fetch: h.fetch, onError: (e) => errors.push(e) });
  later(() => server.close());
  const bodies = await within(Promise.all(answers.map(async (p) => (await p).text())), 5000, "the burst's answers");
  assert.deepEqual(bodies, Array.from({ length: burst }, (_, i) => `answer to /burst/${i}`), "every caller its own answer");
  assert.deepEqual(front.to(POLL).map((c) => carried(c).length).filter(Boolean), [4, 4, 2], "each poll carried the answers to the last one's requests");

  const n = 20;
  for (let i = 0; i < n; i++) {
    const res = await within(s.fetch(`/seq/${i}`), 5000, `the answer to request ${i}`);
    assert.equal(await res.text(), `answer to /seq/${i}`);
  }
  assert.equal(front.to(PUSHRES).length, 0, "no answer went by pushres");
  const sent = front.to(POLL).flatMap(carried);
  assert.deepEqual(sent.toSorted(), [...h.rids.values()].toSorted(), "each answer carried by one poll, once");
  for (const poll of front.to(POLL).filter((c) => c.reply?.answers)) {
    for (const o of poll.reply.answers) assert.equal(o.status, "answered", `${o.rid}: ${JSON.stringify(o)}`);
  }
  await closes(server);
  assert.deepEqual(errors, []);
});

test("a /via/ caller's answer goes with a poll too, straight to the caller", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  const errors = [];
  const h = quick();
  const server = serve({ relay: front.url, net, key: KEY, wait: 5, linger: 10_000, fetch: h.fetch, onError: (e) => errors.push(e) });
  later(() => server.close());

  for (let i = 0; i < 5; i++) {
    const res = await within(fetch(`${RELAY}/via/${net}/gw/${i}`), 5000, `the gateway's answer ${i}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `answer to /gw/${i}`);
  }
  assert.equal(front.to(PUSHRES).length, 0, "no answer went by pushres");
  assert.deepEqual(front.to(POLL).flatMap(carried).toSorted(), [...h.rids.values()].toSorted(), "each carried by a poll");
  await closes(server);
  assert.deepEqual(errors, []);
});

test("an answer ready while a poll waits at the relay goes at once by pushres, not with the poll", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  const errors = [];
  const started = deferred();
  const gate = deferred();
  later(() => gate.resolve()); // a failed test must not leave the handler waiting
  // The default wait and linger: the poll after the handler starts waits 25 s
  // of the relay's clock, which does not move unless the test moves it.
  const server = serve({
    relay: front.url, net, key: KEY, onError: (e) => errors.push(e),
    fetch: async (req, info) => {
      started.resolve(info.rid);
      await gate.promise;
      return new Response("slow but here");
    },
  });
  later(() => server.close());
  const s = await login({ relay: RELAY, net });
  later(() => s.close());

  const answer = s.fetch("/slow");
  const rid = await within(started.promise, 5000, "the handler to start");
  const first = front.calls.findIndex((c) => c.path === POLL && c.reply?.requests?.some((r) => r.rid === rid));
  const parked = await front.next((c) => c.path === POLL && front.calls.indexOf(c) > first, "the next poll");
  gate.resolve();
  const res = await within(answer, 3000, "the answer, while the poll waits 25 s");
  assert.equal(await res.text(), "slow but here");
  assert.equal(parked.status, undefined, "the poll is still waiting at the relay");
  const pushed = await front.next((c) => c.path === PUSHRES && c.body?.rid === rid && c.status !== undefined, "the answer's pushres");
  assert.equal(pushed.status, 200);
  assert.deepEqual(front.to(POLL).flatMap(carried), [], "no poll carried it");
  await closes(server);
  assert.deepEqual(errors, []);
});

test("a poll whose reply is lost goes again with the same answers: each delivered once, none lost", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  const errors = [];
  const h = quick();
  const server = serve({ relay: front.url, net, key: KEY, wait: 5, linger: 10_000, fetch: h.fetch, onError: (e) => errors.push(e) });
  later(() => server.close());
  const s = await login({ relay: RELAY, net });
  later(() => s.close());

  assert.equal(await (await within(s.fetch("/first"), 5000, "the first answer")).text(), "answer to /first");

  // The second answer goes with a poll that then waits at the relay; its
  // caller has it. The connection is cut there, as an idle proxy would:
  // the loop never hears what the relay did with the answer.
  assert.equal(await (await within(s.fetch("/second"), 5000, "the second answer")).text(), "answer to /second");
  const rid = h.rids.get("/second");
  const lost = await front.next((c) => c.path === POLL && carried(c).includes(rid), "the poll that carried it");
  assert.equal(lost.status, undefined, "it waits at the relay");
  lost.cut();
  const again = await front.next((c) => c !== lost && c.path === POLL && carried(c).includes(rid), "the poll sent again with the answer");

  // A request ends the wait of the poll sent again: its reply says the
  // answer was taken before, which counts as delivered.
  assert.equal(await (await within(s.fetch("/third"), 5000, "the third answer")).text(), "answer to /third");
  await front.next((c) => c === again && c.status !== undefined, "the reply of the poll sent again");
  assert.equal(again.status, 200);
  assert.deepEqual(carried(again), carried(lost), "the same answers");
  const outcome = again.reply.answers.find((o) => o.rid === rid);
  assert.equal(outcome.error?.code, "already_answered", "taken by the poll whose reply was lost");
  assert.equal(outcome.error?.status, 409);

  assert.deepEqual([...h.rids.keys()], ["/first", "/second", "/third"], "each handled once");
  assert.equal(front.to(PUSHRES).length, 0, "not posted again by pushres");
  await closes(server);
  assert.deepEqual(errors, [], "already_answered after a lost reply is no error");
});

test("a withdrawn request's answer in a poll does not stop the others", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  // The relay's word that the request was withdrawn reaches serve() only
  // by the reply to its answer: the watch that would tell it first waits.
  front.hold(WATCH);
  const errors = [];
  const s = await login({ relay: front.url, net });
  later(() => s.close());

  // The requests wait for the loop, so its first poll brings all three.
  const withdraw = new AbortController();
  const a = s.fetch("/a");
  const b = s.fetch("/b", { signal: withdraw.signal });
  const c = s.fetch("/c");
  await queued(front, 3);

  const gates = new Map(["/a", "/b", "/c"].map((p) => [p, deferred()]));
  const started = new Map(["/a", "/b", "/c"].map((p) => [p, deferred()]));
  later(() => gates.forEach((g) => g.resolve()));
  const server = serve({
    relay: front.url, net, key: KEY, concurrency: 3, wait: 5, linger: 10_000, onError: (e) => errors.push(e),
    fetch: async (req, info) => {
      const path = new URL(req.url).pathname;
      started.get(path).resolve({ rid: info.rid, signal: req.signal });
      await gates.get(path).promise;
      return new Response(`answer to ${path}`);
    },
  });
  later(() => server.close());
  const got = await within(Promise.all([...started.values()].map((d) => d.promise)), 5000, "three handlers running");
  const [ridA, ridB, ridC] = got.map((g) => g.rid);

  withdraw.abort();
  await assert.rejects(b, { name: "AbortError" });
  const cancel = await front.next((x) => x.path === CANCEL && x.body?.rid === ridB && x.status !== undefined, "the withdrawal");
  assert.equal(cancel.status, 200);
  assert.equal(got[1].signal.aborted, false, "serve() has not heard of it");

  gates.forEach((g) => g.resolve());
  assert.equal(await (await within(a, 5000, "/a's answer")).text(), "answer to /a");
  assert.equal(await (await within(c, 5000, "/c's answer")).text(), "answer to /c");
  const poll = await front.next((x) => x.path === POLL && carried(x).length === 3 && x.status !== undefined, "the poll with the three answers");
  assert.deepEqual(carried(poll).toSorted(), [ridA, ridB, ridC].toSorted());
  const outcomes = Object.fromEntries(poll.reply.answers.map((o) => [o.rid, o]));
  assert.equal(outcomes[ridA].status, "answered");
  assert.equal(outcomes[ridC].status, "answered");
  assert.equal(outcomes[ridB].error?.status, 410);
  assert.equal(outcomes[ridB].error?.code, "cancelled");
  await within(new Promise((r) => (got[1].signal.aborted ? r() : got[1].signal.addEventListener("abort", r))), 5000, "/b's signal aborting, as pushres's 410 would have it");
  assert.equal(front.to(PUSHRES).length, 0, "none went again by pushres");
  await closes(server);
  assert.deepEqual(errors, [], "a withdrawn request is no error");
});

test("a relay that does not take answers: the first poll with them does not wait, and they go by pushres", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  // An older relay ignores a field it does not know.
  front.forward = (call) => {
    if (call.path !== POLL || !call.body?.answers) return undefined;
    const { answers, ...rest } = call.body;
    return rest;
  };
  const errors = [];
  const h = quick();
  const server = serve({ relay: front.url, net, key: KEY, linger: 10_000, fetch: h.fetch, onError: (e) => errors.push(e) });
  later(() => server.close());
  const s = await login({ relay: RELAY, net });
  later(() => s.close());

  // Each within far less than the 25 s a poll waits at the relay.
  for (const path of ["/one", "/two", "/three"]) {
    assert.equal(await (await within(s.fetch(path), 5000, `the answer to ${path}`)).text(), `answer to ${path}`);
  }
  const polls = front.to(POLL).filter((c) => carried(c).length > 0);
  assert.equal(polls.length, 1, "one poll found out");
  assert.equal(polls[0].body.wait, 0, "it did not wait");
  assert.deepEqual(front.to(PUSHRES).map((c) => c.body.rid), [...h.rids.values()], "every answer by pushres, once");
  await closes(server);
  assert.deepEqual(errors, []);
});

test("a poll refused whole hands its answers to pushres and polls on", async (t) => {
  const net = newNet();
  const later = cleanups(t);
  const front = await newFront();
  later(front.close);
  let refusals = 0;
  front.refuse = (call) => (call.path === POLL && call.body?.answers && refusals++ === 0 ? { status: 400, code: "invalid_answers" } : undefined);
  const errors = [];
  const h = quick();
  const server = serve({ relay: front.url, net, key: KEY, wait: 5, linger: 10_000, fetch: h.fetch, onError: (e) => errors.push(e) });
  later(() => server.close());
  const s = await login({ relay: RELAY, net });
  later(() => s.close());

  assert.equal(await (await within(s.fetch("/refused"), 5000, "the answer of the refused poll")).text(), "answer to /refused");
  assert.deepEqual(front.to(PUSHRES).map((c) => c.body.rid), [h.rids.get("/refused")], "it went by pushres");
  assert.equal(await (await within(s.fetch("/after"), 5000, "the next answer")).text(), "answer to /after");
  const last = await front.next((c) => c.path === POLL && carried(c).includes(h.rids.get("/after")), "a poll with the next answer");
  assert.equal(last.body.answers.length, 1);
  assert.equal(front.to(PUSHRES).length, 1, "polls carry answers again");
  await closes(server);
  assert.deepEqual(errors, [], "serving goes on");
});
