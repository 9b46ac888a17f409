// Node tests of session.fetch as a drop-in fetch: redirects as the Fetch
// standard follows them, Response.url and redirected, Content-Length.

import assert from "node:assert/strict";
import { serve, login } from "./c2cvia.js";
import { RELAY, KEY, test, newNet, count } from "./testenv.mjs";

/**
 * /to/<status>?<location>: answers status with that Location (none when
 * empty); /loop: redirects to itself; anything else: what it got.
 */
async function redirector(req) {
  const url = new URL(req.url);
  const m = /^\/to\/(\d+)$/.exec(url.pathname);
  if (m) {
    const location = decodeURIComponent(url.search.slice(1));
    const headers = location ? { Location: location } : {};
    return new Response(`moved ${m[1]}`, { status: Number(m[1]), headers });
  }
  if (url.pathname === "/loop") return new Response(null, { status: 302, headers: { Location: "/loop" } });
  if (url.pathname === "/nothing") return new Response(null, { status: 204 });
  if (url.pathname === "/empty") return new Response(null);
  if (url.pathname === "/not-modified") return new Response(null, { status: 304 });
  if (url.pathname === "/ended") return new Response(new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode("ended")), c.close()) }));
  return Response.json({
    method: req.method,
    url: req.url,
    type: req.headers.get("content-type"),
    auth: req.headers.get("authorization"),
    body: req.method === "GET" || req.method === "HEAD" ? null : await req.text(),
  });
}

async function setup(t) {
  const net = newNet();
  const server = serve({ relay: RELAY, net, key: KEY, wait: 5, fetch: redirector, onError: () => {} });
  t.after(() => server.close());
  const s = await login({ relay: RELAY, net });
  t.after(() => s.close());
  return s;
}

const to = (status, location) => `/to/${status}?${encodeURIComponent(location)}`;

test("session.fetch follows redirects as fetch does: method and body by status", async (t) => {
  const s = await setup(t);
  const post = { method: "POST", headers: { "Content-Type": "text/plain", Authorization: "Bearer x" }, body: "the body" };
  for (const [status, method, want] of [
    [301, "POST", { method: "GET", type: null, body: null }],
    [302, "POST", { method: "GET", type: null, body: null }],
    [303, "POST", { method: "GET", type: null, body: null }],
    [303, "PUT", { method: "GET", type: null, body: null }],
    [301, "PUT", { method: "PUT", type: "text/plain", body: "the body" }],
    [307, "POST", { method: "POST", type: "text/plain", body: "the body" }],
    [308, "PATCH", { method: "PATCH", type: "text/plain", body: "the body" }],
  ]) {
    const res = await s.fetch(to(status, "/landed?x=1"), { ...post, method });
    assert.equal(res.status, 200, `${status} ${method}`);
    assert.equal(res.redirected, true);
    assert.equal(res.url, `${RELAY}/landed?x=1`);
    const got = await res.json();
    assert.deepEqual({ method: got.method, type: got.type, body: got.body }, want, `${status} ${method}`);
    assert.equal(got.auth, "Bearer x", "same origin: Authorization kept");
    assert.equal(got.url, `${RELAY}/landed?x=1`);
  }
  // 303 keeps HEAD; GET stays GET.
  const head = await s.fetch(to(303, "/landed"), { method: "HEAD" });
  assert.deepEqual([head.status, head.redirected], [200, true]);
  const get = await s.fetch(to(307, "/landed"));
  assert.equal((await get.json()).method, "GET");

  // A stream body is held as bytes, so a 307 sends it again.
  const stream = new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode("streamed")), c.close()) });
  const again = await s.fetch(to(307, "/landed"), { method: "POST", body: stream, duplex: "half" });
  assert.equal((await again.json()).body, "streamed");
});

test("session.fetch resolves Location against the current URL; a new origin loses Authorization", async (t) => {
  const s = await setup(t);
  const rel = await s.fetch(`${to(302, "../up?q=2")}`);
  assert.equal(rel.url, `${RELAY}/up?q=2`);
  const chain = await s.fetch(to(301, to(308, "/end")));
  assert.equal(chain.url, `${RELAY}/end`);
  assert.equal(chain.redirected, true);

  const other = await s.fetch(to(302, "http://elsewhere.example:8443/there?a=b#frag"), { headers: { Authorization: "Bearer x" } });
  const got = await other.json();
  assert.equal(got.url, "http://elsewhere.example:8443/there?a=b", "Host is the Location's");
  assert.equal(got.auth, null, "Authorization dropped across origins");
  assert.equal(other.url, "http://elsewhere.example:8443/there?a=b", "url has no fragment");

  const plain = await s.fetch("/plain#x");
  assert.equal(plain.url, `${RELAY}/plain`);
  assert.equal(plain.redirected, false);
});

test("session.fetch: redirect manual and error, 20 redirects at most, a Location fetch cannot follow", async (t) => {
  const s = await setup(t);
  const manual = await s.fetch(to(302, "/landed"), { redirect: "manual" });
  assert.deepEqual([manual.status, manual.headers.get("location"), manual.redirected], [302, "/landed", false]);
  assert.equal(await manual.text(), "moved 302");

  await assert.rejects(s.fetch(to(301, "/landed"), { redirect: "error" }), TypeError);
  await assert.rejects(s.fetch(to(302, ""), { redirect: "error" }), TypeError, "a redirect status without Location too");
  const ok = await s.fetch("/plain", { redirect: "error" });
  assert.equal(ok.status, 200, "no redirect: no error");
  await assert.rejects(s.fetch(new Request("http://x.example" + to(308, "/landed"), { redirect: "error" })), TypeError, "a Request's redirect");

  const before = await count("/api/v1/client/pushreq");
  await assert.rejects(s.fetch("/loop"), (err) => err instanceof TypeError && /20 redirects/.test(err.message));
  assert.equal((await count("/api/v1/client/pushreq")) - before, 21, "the request and 20 redirects");

  await assert.rejects(s.fetch(to(302, "ftp://files.example/x")), TypeError);
  await assert.rejects(s.fetch(to(302, "http://[bad")), TypeError);

  // A 3xx without Location, and 300 or 304, are answers like any other.
  const bare = await s.fetch(to(302, ""));
  assert.deepEqual([bare.status, bare.redirected, await bare.text()], [302, false, "moved 302"]);
  const multiple = await s.fetch(to(300, "/landed"));
  assert.deepEqual([multiple.status, multiple.redirected], [300, false]);
});

test("a whole answer has its Content-Length; 204, 304 and a HEAD answer without a body have none", async (t) => {
  const s = await setup(t);
  const ended = await s.fetch("/ended");
  assert.equal(ended.headers.get("content-length"), "5");
  assert.equal(await ended.text(), "ended");
  assert.equal((await s.fetch("/nothing")).headers.get("content-length"), null);
  assert.equal((await s.fetch("/not-modified")).headers.get("content-length"), null);
  const head = await s.fetch("/empty", { method: "HEAD" });
  assert.equal(head.headers.get("content-length"), null, "a HEAD answer without a body");
  assert.equal(await head.text(), "");
  // A SimServer that answers HEAD with a body tells its length, as a Go
  // server's HEAD does; the body itself never comes.
  const told = await s.fetch("/ended", { method: "HEAD" });
  assert.equal(told.headers.get("content-length"), "5");
  assert.equal(await told.text(), "");
});
