// The cases both SDKs pass alike (testdata/sdk-cases.json): each case runs
// here by its kind, against the live relay; the Go SDK runs the same table
// in client/. A kind without a runner fails.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { serve, login, RelayError, defaults, backoffDelay, parseJSON, stringifyJSON } from "./c2cvia.js";
import {
  RELAY, KEY, SHORT_RELAY, SHORT_CONTROL, test, newNet, control, advance, count, until, within, TestEventSource,
} from "./testenv.mjs";

const table = JSON.parse(readFileSync(new URL("../testdata/sdk-cases.json", import.meta.url), "utf8"));

/** A backoff short enough for tests that count retries. */
const quick = { initial: 1, max: 2 };

/** @type {Record<string, (c: any, t: import("node:test").TestContext) => Promise<void> | void>} */
const runners = {
  defaults(c) {
    const mine = {
      retries: defaults.retries,
      backoff_initial_ms: defaults.backoffInitial,
      backoff_max_ms: defaults.backoffMax,
      concurrency: defaults.concurrency,
      lease_ms: defaults.lease * 1000,
      wait_ms: defaults.wait * 1000,
      linger_ms: defaults.linger,
    };
    for (const key of Object.keys(c.expect)) assert.ok(key in mine, `no JavaScript default for ${key}`);
    assert.deepEqual(mine, c.expect);
    assert.ok(Object.isFrozen(defaults));
  },

  backoff(c) {
    for (const step of c.steps) {
      const seen = new Set();
      for (let i = 0; i < 2000; i++) {
        const d = backoffDelay(step.retry, { retryAfter: step.retry_after_s });
        assert.ok(d >= step.min_ms && d <= step.max_ms, `retry ${step.retry}: ${d} ms is outside [${step.min_ms}, ${step.max_ms}]`);
        seen.add(d);
      }
      if (step.min_ms < step.max_ms) assert.ok(seen.size > 100, `retry ${step.retry}: jitter`);
    }
    assert.throws(() => backoffDelay(-1), TypeError);
    assert.throws(() => backoffDelay(0.5), TypeError);
  },

  async retries(c, t) {
    assert.ok(c.refusals > c.retries, "the case refuses more often than it retries");
    const refuse = (path) => {
      t.after(() => control(`/fail?path=${path}&times=0`)); // whatever happens, the refusals end with the test
      return control(`/fail?path=${path}&status=503&times=${c.refusals}`);
    };

    // login: refused each time, tried retries + 1 times, then the refusal.
    const net = newNet();
    let before = await count("/api/v1/client/login");
    await refuse("/api/v1/client/login");
    await assert.rejects(login({ relay: RELAY, net, retries: c.retries, backoff: quick }), { name: "RelayError", status: 503, code: "injected" });
    assert.equal((await count("/api/v1/client/login")) - before, c.expect_calls, "login");
    // The refusals left over are ridden out by enough retries.
    before = await count("/api/v1/client/login");
    const rider = await login({ relay: RELAY, net, retries: c.refusals, backoff: quick });
    t.after(() => rider.close());
    assert.equal((await count("/api/v1/client/login")) - before, c.refusals - c.expect_calls + 1, "login after the refusals");
    const s = await login({ relay: RELAY, net, retries: c.retries, backoff: quick });
    t.after(() => s.close());

    // A session's call: send.
    const peer = await login({ relay: RELAY, net });
    t.after(() => peer.close());
    before = await count("/api/v1/peer/send");
    await refuse("/api/v1/peer/send");
    await assert.rejects(s.send(peer.peerId, 1), { status: 503, code: "injected" });
    assert.equal((await count("/api/v1/peer/send")) - before, c.expect_calls, "send");
    await control("/fail?path=/api/v1/peer/send&status=404&times=1"); // a 404 is not tried again
    await assert.rejects(s.send(peer.peerId, 1), { status: 404 });
    assert.equal((await count("/api/v1/peer/send")) - before, c.expect_calls + 1, "a 404 is not retried");

    // serve: the head of a streamed answer.
    const errors = [];
    let completed;
    const server = serve({
      relay: RELAY, net, key: KEY, wait: 5, retries: c.retries, backoff: quick, onError: (e) => errors.push(e),
      fetch: (req, info) => {
        completed = info.completed;
        return new Response(new ReadableStream({ start: (ctrl) => ctrl.enqueue(new TextEncoder().encode("part")) }));
      },
    });
    t.after(() => server.close());
    before = await count("/api/v1/server/pushres");
    await refuse("/api/v1/server/pushres");
    const abort = new AbortController();
    const res = s.fetch("/stream", { signal: abort.signal }).catch(() => {});
    await until(() => errors.length > 0, "serve to give up");
    assert.equal((await count("/api/v1/server/pushres")) - before, c.expect_calls, "serve's pushres");
    assert.ok(errors[0] instanceof RelayError && errors[0].status === 503);
    await assert.rejects(within(completed, 10_000, "info.completed"), { status: 503 }, "info.completed rejects: the answer was abandoned");
    abort.abort();
    await res;

    assert.throws(() => serve({ relay: RELAY, net, key: KEY, fetch: () => new Response(), retries: -1 }), TypeError);
    await assert.rejects(login({ relay: RELAY, net, backoff: { initial: 0 } }), TypeError);
    await assert.rejects(login({ relay: RELAY, net, backoff: { initial: 10, max: 5 } }), TypeError);
  },

  async messages_resume(c, t) {
    const net = newNet();
    const ada = await login({ relay: RELAY, net });
    const bob = await login({ relay: RELAY, net });
    t.after(() => ada.close());
    t.after(() => bob.close());
    for (const data of c.send) await ada.send(bob.peerId, data);

    const read = async (it, n) => {
      const out = [];
      for (let i = 0; i < n; i++) out.push((await within(it.next(), 10_000, `message ${i + 1} of ${n}`)).value);
      return out;
    };
    const first = bob.messages();
    const got = await read(first, c.first_read);
    assert.deepEqual(got.map((m) => m.data), c.send.slice(0, c.first_read));
    await first.return(); // it fetched more than it gave out: those come next
    const next = await read(bob.messages(), c.expect_next.length);
    assert.deepEqual(next.map((m) => m.data), c.expect_next);

    // since starts where asked, and a replay does not move the session's cursor back.
    const replay = await read(bob.messages({ since: got[0].id }), 2);
    assert.deepEqual(replay.map((m) => m.data), c.send.slice(1, 3));
    await ada.send(bob.peerId, "after all");
    assert.deepEqual((await read(bob.messages(), 1)).map((m) => m.data), ["after all"]);
    assert.throws(() => bob.messages({ since: -1 }), TypeError);
  },

  async peers(c, t) {
    const net = newNet();
    const sessions = [];
    for (let i = 0; i < c.logins; i++) {
      const s = await login({ relay: RELAY, net });
      t.after(() => s.close());
      sessions.push(s);
    }
    const peers = await sessions[0].peers();
    assert.equal(peers.length, c.expect_peers);
    assert.deepEqual(new Set(peers.map((p) => p.peerId)), new Set(sessions.map((s) => s.peerId)));
    for (const p of peers) {
      assert.deepEqual(Object.keys(p).sort(), ["lastSeen", "peerId"]);
      assert.ok(p.lastSeen instanceof Date && !Number.isNaN(p.lastSeen.getTime()), "lastSeen is a Date");
    }
  },

  async relogin(c, t) {
    assert.ok(SHORT_RELAY && SHORT_CONTROL, "the relay with short logins (C2CVIA_SHORT_RELAY)");
    for (const transport of ["pullsmart", "event stream"]) {
      if (transport === "event stream") {
        globalThis.EventSource = TestEventSource;
        t.after(() => delete globalThis.EventSource);
      }
      await relogin(c, t, transport);
      if (transport === "event stream") {
        assert.ok(TestEventSource.instances.length >= 2, "the event stream opened again");
        assert.equal(TestEventSource.instances.at(-1).readyState, 2, "and return() closed it");
        delete globalThis.EventSource;
      }
    }
  },

  async numbers(c, t) {
    for (const transport of ["pullsmart", "event stream"]) {
      if (transport === "event stream") {
        globalThis.EventSource = TestEventSource;
        t.after(() => delete globalThis.EventSource);
      }
      const net = newNet();
      const ada = await login({ relay: RELAY, net });
      const bob = await login({ relay: RELAY, net });
      t.after(() => ada.close());
      t.after(() => bob.close());
      await bob.subscribe("n");
      // By turns: send, publish, broadcast.
      for (const [i, value] of c.values.entries()) {
        const data = parseJSON(value);
        if (i % 3 === 0) await ada.send(bob.peerId, data);
        else if (i % 3 === 1) await ada.publish("n", data);
        else await ada.broadcast(data);
      }
      const it = bob.messages();
      for (const value of c.values) {
        const m = (await within(it.next(), 10_000, `${value} by ${transport}`)).value;
        assert.equal(stringifyJSON(m.data), value, `${value} by ${transport}`);
      }
      await it.return();
      if (transport === "event stream") {
        assert.ok(TestEventSource.instances.length > 0, "read from the event stream");
        delete globalThis.EventSource;
      }
    }
  },
};

/** The relogin case over one transport of messages(). */
async function relogin(c, t, transport) {
  const logins = () => count("/api/v1/client/login", "relay", SHORT_CONTROL);
  const net = newNet();
  const bob = await login({ relay: SHORT_RELAY, net, backoff: quick });
  t.after(() => bob.close());
  const ada = await login({ relay: SHORT_RELAY, net });
  t.after(() => ada.close());
  await bob.subscribe("news");
  const it = bob.messages();
  await ada.send(bob.peerId, "before");
  assert.equal((await within(it.next(), 10_000, "the first message")).value.data, "before");

  const old = { token: bob.token, peerId: bob.peerId, expiresAt: bob.expiresAt };
  const pending = it.next(); // polls on, across the expiry
  const before = await logins();
  await advance(`${c.advance_ms}ms`, SHORT_CONTROL);
  // Several calls find the token expired at once: one login for all.
  const [peers] = await within(Promise.all([bob.peers(), bob.subscribe("more"), bob.peers()]), 10_000, "the calls after the expiry");
  const relogged = await logins();
  assert.equal(1 + relogged - before, c.expect_logins, "logged in again once");
  assert.notEqual(bob.token, old.token);
  assert.notEqual(bob.peerId, old.peerId);
  assert.ok(bob.expiresAt > old.expiresAt, "a later expiry");
  assert.ok(peers.some((p) => p.peerId === bob.peerId), "the call went through as the new login");

  // The topics are subscribed again; the iterator reads on after its last message.
  const carol = await login({ relay: SHORT_RELAY, net });
  t.after(() => carol.close());
  // (The relay counts the old login's subscription among the receivers
  // while it keeps it; that bob reads "after" shows the new one.)
  assert.ok((await carol.publish("news", "after")).receivers >= 1);
  await carol.send(bob.peerId, "direct");
  assert.equal((await within(pending, 10_000, `a message after the new login, by ${transport}`)).value.data, "after");
  assert.equal((await within(it.next(), 10_000, "the next one")).value.data, "direct");
  assert.equal(await logins(), relogged + 1, "carol's login: bob did not log in again");

  // Only token_expired logs in again: another 401 is the caller's.
  const now = await logins();
  await control("/fail?path=/api/v1/peer/peers&status=401&times=1", SHORT_CONTROL);
  await assert.rejects(bob.peers(), { status: 401, code: "injected" });
  assert.equal(await logins(), now);
  await it.return();
}

for (const c of table.cases) {
  test(`case: ${c.name}`, async (t) => {
    const run = runners[c.kind];
    assert.ok(run, `no runner for the kind ${JSON.stringify(c.kind)} of the case ${JSON.stringify(c.name)}`);
    await run(c, t);
  });
}

test("every kind of the table has a runner, and every runner a case", () => {
  assert.deepEqual(new Set(table.cases.map((c) => c.kind)), new Set(Object.keys(runners)));
});
