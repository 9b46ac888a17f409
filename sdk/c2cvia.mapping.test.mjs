// The SDK's HTTP ⇄ sim mapping against the golden cases of testdata/mapping,
// which the Go package internal/simhttp is held to as well (their format is
// described in internal/simhttp/golden_test.go). Each case is checked on the
// mapping's core, which keeps every header pair, and again through the
// Request and Response objects that serve and session.fetch use. No relay
// is needed.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { __mapping as m } from "./c2cvia.js";

const dir = new URL("../testdata/mapping/", import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
const relay = new URL("http://relay.test:8080");

/** The case's headers as a platform holds them: ByteStrings, a latin1 value one code point per byte. */
function pairs(g) {
  return (g?.headers ?? []).map(([name, value, enc]) => {
    if (enc === "latin1") {
      assert.doesNotMatch(value, /[^\x00-\xff]/, "a latin1 value is bytes");
      return [name, value];
    }
    return [name, String.fromCharCode(...new TextEncoder().encode(value))];
  });
}

/** The case's body bytes; empty for none. */
function body(g) {
  if (typeof g?.body === "string") return new TextEncoder().encode(g.body);
  if (typeof g?.body_base64 === "string") return Uint8Array.from(atob(g.body_base64), (c) => c.charCodeAt(0));
  return new Uint8Array(0);
}

/** Header pairs by canonical name, values in order, as Go's http.Header compares. */
function grouped(list) {
  const out = {};
  for (const [name, value] of list) (out[m.canonicalName(name)] ??= []).push(value);
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The entries of a Headers object, as the platform joins them. */
const entries = (headers) => [...headers];

/**
 * simHeaders as they come from a Headers object, which joins the values of
 * a repeated name with ", " (Set-Cookie alone stays apart): the platform,
 * not the mapping, loses the repeat.
 */
function joined(simHeaders) {
  return Object.fromEntries(
    Object.entries(simHeaders).map(([name, v]) => [name, Array.isArray(v) && name !== "Set-Cookie" ? v.join(", ") : v]),
  );
}

const bytesOf = (b) => [...(b ?? new Uint8Array(0))];

assert.ok(files.length > 0, "golden cases in testdata/mapping");
for (const file of files) {
  const text = readFileSync(new URL(file, dir), "utf8");
  const c = JSON.parse(text);
  const simText = m.rawField(text, "sim"); // raw: a 20-digit simBody keeps its digits
  const name = file.replace(/\.json$/, "");
  assert.ok(c.about, `${file} says what it is about`);

  if (name.startsWith("req-")) {
    const host = pairs(c.http).find(([n]) => m.canonicalName(n) === "Host")?.[1];
    const withoutHost = pairs(c.http).filter(([n]) => m.canonicalName(n) !== "Host");
    const sent = body(c.http);

    test(`${name}: ${c.about}`, async (t) => {
      if (c.direction !== "to_http") {
        await t.test("http → sim", () => {
          const sim = m.toSimReq({ method: c.http.method, target: c.http.target, headers: pairs(c.http), body: sent.length ? sent : null });
          assert.deepEqual(sim, JSON.parse(simText));
        });
        await t.test("http → sim through a Request (session.fetch)", async () => {
          // The Request's URL is parsed (dot segments removed), so the target
          // goes in as session.fetch takes it from a string, with the host.
          const target = m.rawTarget(`http://${host}${c.http.target}`);
          assert.equal(target, c.http.target);
          const req = new Request(`http://${host}${c.http.target}`, {
            method: c.http.method,
            headers: withoutHost,
            body: sent.length ? sent : null,
          });
          const sim = m.toSimReq(await m.requestMessage(req, target));
          const want = JSON.parse(simText);
          assert.deepEqual(sim, { ...want, simHeaders: joined(want.simHeaders) });
        });
      }
      if (c.direction === "to_sim") return;

      await t.test("sim → http", () => {
        const got = m.fromSimReq(simText);
        assert.equal(got.method, c.http.method);
        assert.equal(got.target, c.http.target);
        assert.equal(got.headers.find(([n]) => n === "Host")?.[1], host);
        assert.deepEqual(grouped(got.headers.filter(([n]) => n !== "Host")), grouped(m.endToEnd(withoutHost)));
        assert.deepEqual(bytesOf(got.body), bytesOf(sent));
      });
      await t.test("sim → the handler's Request (serve)", async () => {
        const { request, target } = m.handlerRequest(simText, relay);
        const url = new URL(request.url);
        assert.equal(request.method, c.http.method);
        assert.equal(target, c.http.target, "the target as sent, which serve hands the handler as info.target");
        // A Request's URL is parsed by the URL standard, which removes dot
        // segments ("/./", "/x/../"): only a target it leaves alone can come
        // back through request.url.
        if (new URL(c.http.target, "http://x").href === "http://x" + c.http.target) {
          assert.equal(url.pathname + url.search, c.http.target);
        }
        assert.equal(url.host, host ?? relay.host, "the host the caller asked for, else the relay's");
        assert.equal(request.headers.get("host") ?? undefined, host);
        const got = entries(request.headers).filter(([n]) => n !== "host");
        assert.deepEqual(got, entries(new Headers(m.endToEnd(withoutHost))));
        assert.deepEqual(bytesOf(new Uint8Array(await request.arrayBuffer())), bytesOf(sent));
      });
    });
  }

  if (name.startsWith("res-")) {
    test(`${name}: ${c.about}`, async (t) => {
      if (c.direction !== "to_http") {
        const written = body(c.handler);
        await t.test("handler → sim", () => {
          const sim = m.toSimRes({ status: c.handler.status, headers: pairs(c.handler), body: written.length ? written : null });
          assert.deepEqual(sim, JSON.parse(simText));
        });
        await t.test("handler's Response → sim (serve)", async () => {
          const res = new Response(written.length ? written : null, { status: c.handler.status, headers: pairs(c.handler) });
          const sim = m.toSimRes(await m.responseMessage(res));
          const want = JSON.parse(simText);
          assert.deepEqual(sim, { ...want, simHeaders: joined(want.simHeaders) });
        });
      }
      if (c.direction === "to_sim") return;

      await t.test("sim → wire", () => {
        const got = m.fromSimRes(simText, c.method);
        assert.equal(got.status, c.wire.status);
        assert.deepEqual(grouped(got.headers), grouped(pairs(c.wire)));
        assert.deepEqual(bytesOf(got.body), bytesOf(body(c.wire)));
      });
      await t.test("sim → the caller's Response (session.fetch)", async () => {
        const res = m.callerResponse(simText, c.method);
        assert.equal(res.status, c.wire.status);
        assert.deepEqual(entries(res.headers), entries(new Headers(pairs(c.wire))));
        assert.deepEqual(bytesOf(new Uint8Array(await res.arrayBuffer())), bytesOf(body(c.wire)));
      });
    });
  }
}

test("a SimClient's simBody object under a form type: names sorted, Go's escapes", () => {
  const got = m.fromSimReq({
    simEndpoint: "/f",
    simHeaders: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
    simBody: { "b*": "x y!~'", a: ["é", 7, null], z: null },
  });
  assert.equal(new TextDecoder().decode(got.body), "a=%C3%A9&a=7&a=null&b%2A=x+y%21~%27");
});

test("header names take Go's canonical form; odd ones stay", () => {
  assert.equal(m.canonicalName("x-REQUEST-id"), "X-Request-Id");
  assert.equal(m.canonicalName("te"), "Te");
  assert.equal(m.canonicalName("www-authenticate"), "Www-Authenticate");
  assert.equal(m.canonicalName("x_y-z"), "X_y-Z");
  assert.equal(m.canonicalName("bad name"), "bad name");
});

test("a header value in simHeaders reaches the wire as its UTF-8 bytes", () => {
  const { headers } = m.fromSimRes({ simStatus: 200, simHeaders: { "X-Name": "José" }, simBody: null }, "GET");
  assert.deepEqual(headers.find(([n]) => n === "X-Name"), ["X-Name", "Jos\xc3\xa9"]);
  assert.throws(() => m.fromSimRes({ simHeaders: { "X-A": "\u0129" }, simHeadersEncoding: { "X-A": "latin1" } }, "GET"), /above U\+00FF/);
});

test("session.fetch keeps a string's path as written, escaped as a URL would be", () => {
  assert.equal(m.rawTarget("/a//b/./c/../d?q=1 2#frag"), "/a//b/./c/../d?q=1%202");
  assert.equal(m.rawTarget("https://h.example:8443/é<x>?a='é'"), "/%C3%A9%3Cx%3E?a=%27%C3%A9%27");
  assert.equal(m.rawTarget("http://h.example?x"), "/?x");
  assert.equal(m.rawTarget("items"), undefined, "a relative path is the URL parser's");
  assert.equal(m.rawTarget("//other.example/x"), undefined);
});

test("a Request's Content-Length is what the platform would send", async () => {
  const empty = await m.requestMessage(new Request("http://h/x", { method: "POST" }));
  assert.deepEqual(empty.headers.filter(([n]) => n === "Content-Length"), [["Content-Length", "0"]]);
  const get = await m.requestMessage(new Request("http://h/x"));
  assert.deepEqual(get.headers.filter(([n]) => /content-length/i.test(n)), []);
  const sized = await m.requestMessage(new Request("http://h/x", { method: "PUT", body: "héllo" }));
  assert.deepEqual(sized.headers.filter(([n]) => n === "Content-Length"), [["Content-Length", "6"]]);
});

test("the handler's URL: X-Forwarded-Proto and Host, else the relay's", () => {
  const url = (simHeaders) => m.handlerRequest({ simEndpoint: "/p", simQuery: "a=1", simHeaders }, relay).request.url;
  assert.equal(url({ Host: "shop.example", "X-Forwarded-Proto": "https" }), "https://shop.example/p?a=1");
  assert.equal(url({ Host: "shop.example:8443", "X-Forwarded-Proto": "HTTPS, http" }), "https://shop.example:8443/p?a=1");
  assert.equal(url({ Host: "shop.example", "X-Forwarded-Proto": "gopher" }), "http://shop.example/p?a=1");
  assert.equal(url({ Host: "evil.example/x" }), "http://relay.test:8080/p?a=1");
  assert.equal(url({}), "http://relay.test:8080/p?a=1");
});

test("a SimClient's GET with a body: the Request has neither body nor Content-Length", async () => {
  const { request } = m.handlerRequest({ simEndpoint: "/g", simMethod: "GET", simBody: "x", simHeaders: { "Content-Length": "1" } }, relay);
  assert.equal(request.method, "GET");
  assert.equal(request.body, null);
  assert.equal(request.headers.get("content-length"), null);
});

test("a sim_req that no Request can carry throws, for serve to answer 400", () => {
  assert.throws(() => m.handlerRequest({ simEndpoint: "/c", simMethod: "CONNECT" }, relay), TypeError);
  assert.throws(() => m.handlerRequest({ simEndpoint: "/b", simBody: "%%%", simBodyEncoding: "base64" }, relay), /base64/);
});
