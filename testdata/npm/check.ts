// Every export of the c2cvia package, used as its types say, against a live
// relay: sdk_package_test.go compiles this with `tsc --strict` against the
// packed package and runs it with C2CVIA_RELAY set. Each step that fails is
// printed; the exit status is 1 when any did.

import assert from "node:assert/strict";
import * as c2cvia from "c2cvia";
import type { HandlerInfo, JSONValue, Message, Peer, Server, Session } from "c2cvia";

// From the namespace rather than named imports, so that a missing export
// fails its steps, not the whole program before its first line.
const { backoffDelay, defaults, JSONNumber, login, parseJSON, RelayError, serve, stringifyJSON } = c2cvia;

const relay = process.env.C2CVIA_RELAY;
if (!relay) throw new Error("C2CVIA_RELAY is unset");

let failed = 0;
async function step(name: string, fn: () => Promise<void> | void): Promise<void> {
  try {
    await within(Promise.resolve().then(fn), 20_000, name);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
}

/** Rejects when p does not settle within ms. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The first n messages of it; then it is closed. */
async function take(it: AsyncIterableIterator<Message>, n: number): Promise<Message[]> {
  const got: Message[] = [];
  for await (const m of it) {
    got.push(m);
    if (got.length === n) break;
  }
  return got;
}

let nets = 0;
const newNet = () => `ts-${process.pid}-${++nets}`;
const key = "typescript-key-0123456789";

// The value exports the types declare, and nothing else (the module's
// internals start with "__"): the list must name every declared one to
// compile, and the module must export exactly these.
const declared = ["RelayError", "JSONNumber", "parseJSON", "stringifyJSON", "defaults", "backoffDelay", "serve", "login"] as const;
type Undeclared = Exclude<keyof typeof c2cvia, (typeof declared)[number]>;
const everyExportListed: [Undeclared] extends [never] ? true : Undeclared = true;

await step("the module exports what its types declare", () => {
  assert.equal(everyExportListed, true);
  const exported = Object.keys(c2cvia).filter((name) => !name.startsWith("__"));
  assert.deepEqual(exported.sort(), [...declared].sort());
});

await step("defaults", () => {
  assert.deepEqual({ ...defaults }, { retries: 9, backoffInitial: 250, backoffMax: 30000, concurrency: 4, lease: 30, wait: 25, linger: 2 });
  assert.ok(Object.isFrozen(defaults));
});

await step("backoffDelay", () => {
  const between = (ms: number, lo: number, hi: number) => assert.ok(ms >= lo && ms <= hi, `${ms} not in [${lo}, ${hi}]`);
  between(backoffDelay(0), 125, 250);
  between(backoffDelay(1), 250, 500);
  between(backoffDelay(3), 1000, 2000);
  between(backoffDelay(40), 15000, 30000);
  assert.equal(backoffDelay(0, { retryAfter: 5 }), 5000);
  between(backoffDelay(2, { initial: 100, max: 300 }), 150, 300);
});

await step("JSON keeps every digit", () => {
  const big = parseJSON('{"id":123456789012345678901234567890,"n":1,"safe":9007199254740991,"f":0.1}');
  assert.deepEqual(big, { id: 123456789012345678901234567890n, n: 1, safe: 9007199254740991, f: 0.1 });
  const pi = parseJSON("3.141592653589793238462643383279");
  assert.ok(pi instanceof JSONNumber);
  assert.equal(pi.text, "3.141592653589793238462643383279");
  assert.equal(pi.toString(), "3.141592653589793238462643383279");
  assert.equal(pi.valueOf(), 3.141592653589793);
  assert.equal(JSON.stringify(pi), "3.141592653589793", "plain JSON writes the nearest double");
  for (const text of ["12345678901234567890", "-9007199254740993", "[0.1,19.99,1e-7,9007199254740993]", "-0.5", "0"]) {
    assert.equal(stringifyJSON(parseJSON(text)), text);
  }
  assert.equal(stringifyJSON({ n: 12345678901234567890n, x: new JSONNumber("1.000000000000000000001") }), '{"n":12345678901234567890,"x":1.000000000000000000001}');
});

await step("a handler's request and info; session.fetch", async () => {
  const net = newNet();
  const infos: HandlerInfo[] = [];
  const completed: string[] = [];
  const server: Server = serve({
    relay, net, key,
    concurrency: 2, lease: 30, wait: 5, linger: 0, retries: 3, backoff: { initial: 50, max: 1000 },
    fetch: async (req, info) => {
      infos.push(info);
      info.completed.then(() => completed.push(info.rid), () => {});
      const url = new URL(req.url);
      if (url.pathname === "/old") return Response.redirect(new URL("/new", req.url), 302);
      if (url.pathname === "/new") return new Response("moved here");
      return Response.json({ method: req.method, path: url.pathname, rid: req.headers.get("C2cvia-Rid"), body: await req.text() }, { status: 201 });
    },
  });
  const ada: Session = await login({ relay, net, retries: 3, backoff: { initial: 50 } });
  try {
    assert.equal(typeof ada.token, "string");
    assert.equal(ada.net, net);
    assert.ok(ada.expiresAt instanceof Date && ada.expiresAt.getTime() > Date.now());

    const res = await ada.fetch("/a/../b?x=%41", { method: "PUT", body: "hi" });
    assert.equal(res.status, 201);
    const got = (await res.json()) as { method: string; path: string; rid: string; body: string };
    assert.deepEqual({ ...got, rid: undefined }, { method: "PUT", path: "/b", rid: undefined, body: "hi" });
    const info = infos.at(-1)!;
    assert.equal(info.rid, got.rid);
    assert.equal(info.from, ada.peerId);
    assert.equal(info.target, "/a/../b?x=%41");
    assert.ok(info.signal instanceof AbortSignal);
    assert.equal(info.remoteAddr?.transport, "tcp");
    assert.equal(info.remoteAddr?.hostname, "127.0.0.1");
    assert.ok((info.remoteAddr?.port ?? 0) > 0);
    await within(info.completed, 5000, "info.completed");
    assert.ok(completed.includes(info.rid));

    const followed = await ada.fetch("/old");
    assert.equal(followed.status, 200);
    assert.equal(await followed.text(), "moved here");
    const manual = await ada.fetch("/old", { redirect: "manual" });
    assert.equal(manual.status, 302);
    assert.match(manual.headers.get("Location") ?? "", /\/new$/);
  } finally {
    await ada.close();
    await server.close();
    await server.closed;
  }
});

await step("onError answers for a handler that throws", async () => {
  const net = newNet();
  const errors: unknown[] = [];
  const server = serve({
    relay, net, key,
    fetch: () => {
      throw new Error("boom");
    },
    onError: (err) => {
      errors.push(err);
      return new Response("handled", { status: 503 });
    },
  });
  const ada = await login({ relay, net });
  try {
    const res = await ada.fetch("/");
    assert.equal(res.status, 503);
    assert.equal(await res.text(), "handled");
    assert.ok(errors[0] instanceof Error && errors[0].message === "boom");
  } finally {
    await ada.close();
    await server.close();
  }
});

await step("a signal closes serve; a wrong key rejects closed with a RelayError", async () => {
  const net = newNet();
  const stop = new AbortController();
  const server = serve({ relay, net, key, fetch: () => new Response("ok"), signal: stop.signal });
  const ada = await login({ relay, net });
  assert.equal(await (await ada.fetch("/")).text(), "ok");
  await ada.close();
  stop.abort();
  await within(server.closed, 10_000, "closed after the signal aborted");

  const intruder = serve({ relay, net, key: "another-key-0123456789", fetch: () => new Response("no"), onError: () => {} });
  const err: unknown = await intruder.closed.then(
    () => assert.fail("a wrong key served"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof RelayError, String(err));
  assert.equal(err.status, 403);
  assert.equal(err.code, "wrong_key");
});

await step("peer messages, big numbers and peers", async () => {
  const net = newNet();
  const ada = await login({ relay, net });
  const bob = await login({ relay, net });
  try {
    assert.deepEqual(await bob.subscribe("news"), { topic: "news", subscribed: true });
    const sent = await ada.send(bob.peerId, { n: 12345678901234567890n, pi: new JSONNumber("3.141592653589793238462643383279") });
    const published = await ada.publish("news", [1, "two", null]);
    assert.equal(published.receivers, 1);
    const broadcast = await ada.broadcast("hello");
    assert.equal(broadcast.receivers, 1);
    assert.ok(sent.id < published.id && published.id < broadcast.id);

    const [unicast, multicast, everyone] = await take(bob.messages(), 3);
    assert.equal(unicast.kind, "unicast");
    assert.equal(unicast.from, ada.peerId);
    assert.equal(unicast.topic, null);
    assert.ok(unicast.sentAt instanceof Date);
    const data = unicast.data as { [k: string]: JSONValue };
    assert.equal(data.n, 12345678901234567890n);
    assert.ok(data.pi instanceof JSONNumber && data.pi.text === "3.141592653589793238462643383279");
    assert.equal(multicast.kind, "multicast");
    if (multicast.kind === "multicast") assert.equal(multicast.topic.toUpperCase(), "NEWS");
    assert.deepEqual(multicast.data, [1, "two", null]);
    assert.deepEqual([everyone.kind, everyone.data], ["broadcast", "hello"]);

    // Resuming after a cursor.
    const [again] = await take(bob.messages({ since: unicast.id }), 1);
    assert.equal(again.id, multicast.id);

    assert.deepEqual(await bob.unsubscribe("news"), { topic: "news", subscribed: false });
    const peers: Peer[] = await ada.peers();
    assert.deepEqual(peers.map((p) => p.peerId).sort(), [ada.peerId, bob.peerId].sort());
    assert.ok(peers.every((p) => p.lastSeen instanceof Date && !Number.isNaN(p.lastSeen.getTime())));
  } finally {
    await ada.close();
    await bob.close();
  }
});

if (failed > 0) {
  console.log(`${failed} step(s) failed`);
  process.exit(1);
}
console.log("ok");
