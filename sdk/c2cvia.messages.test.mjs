// Node tests of c2cvia.js's peer messages (by long poll and by event
// stream), its errors and close(), against a live relay.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { serve, login, RelayError } from "./c2cvia.js";
import { RELAY, FLAKY, CONTROL, KEY, test, newNet, control, advance, count, answered, until, deferred, within, echo, TestEventSource } from "./testenv.mjs";

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
  // retries: 0, or login would try again 9 times, backing off.
  await assert.rejects(login({ relay: FLAKY, net, retries: 0 }), { name: "RelayError", status: 503, code: "http_503" });
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

test("messages() starts over when the relay's store is behind its cursor (a restored backup)", async (t) => {
  const net = newNet();
  const ada = await login({ relay: RELAY, net });
  const bob = await login({ relay: RELAY, net });
  t.after(() => ada.close());
  t.after(() => bob.close());
  const sent = await ada.send(bob.peerId, "one");
  await ada.send(bob.peerId, "two");
  const it = bob.messages({ since: sent.id + 1_000_000 });
  assert.equal((await within(it.next(), 10_000, "the oldest message")).value.data, "one");
  assert.equal((await it.next()).value.data, "two");
  await it.return();
});
