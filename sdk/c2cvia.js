// c2cvia.js: the JavaScript SDK of the c2cvia relay. One ES module, no
// dependencies, no build step; it runs unchanged in browsers and Node 20+.
//
//   import { serve, login } from "https://RELAY/sdk/c2cvia.js";
//   serve({ relay, net, key, fetch: (req) => new Response("hi") });  // play the server
//   const s = await login({ relay, net });  await s.fetch("/hello"); // reach it
//
// The wire contract is the relay's docs/API.md; this file maps standard
// Request/Response objects to sim_req/sim_res and back.

/**
 * A failure answered by the relay: `status` is the HTTP status, `code` the
 * snake_case code of the JSON error shape (`http_<status>` when the body is
 * not that shape). Network failures reject with the platform's own error
 * (a TypeError from fetch); cancellation with an AbortError.
 */
export class RelayError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number} [retryAfter] seconds, from Retry-After (429)
   */
  constructor(status, code, message, retryAfter) {
    super(message);
    this.name = "RelayError";
    /** @type {number} */ this.status = status;
    /** @type {string} */ this.code = code;
    /** @type {number | undefined} */ this.retryAfter = retryAfter;
  }
}

// ---------------------------------------------------------------------------
// Serving: a fetch handler becomes the SimServer of a net.

/**
 * @typedef {(request: Request) => Response | Promise<Response>} FetchHandler
 * @typedef {{ close(): Promise<void>, closed: Promise<void> }} Server
 */

/**
 * Serves the requests of net with a standard fetch handler (the shape of
 * Deno.serve, Cloudflare Workers and Hono's app.fetch). The handler sees the
 * caller's peer_id (`via` for /via/ gateway requests) in the request header
 * `C2cvia-From` and the request id in `C2cvia-Rid`.
 *
 * A handler that throws answers 500 `internal server error`; the error goes
 * to onError. Network errors, 5xx and 429 are retried with backoff; a 4xx on
 * the poll (bad net, wrong key) stops serving and rejects `closed`.
 *
 * @param {object} options
 * @param {string} [options.relay] the relay's URL; in a browser, location.origin by default
 * @param {string} options.net
 * @param {string} options.key the net's key, 16 characters or more (the first key used claims the net)
 * @param {FetchHandler} options.fetch
 * @param {number} [options.concurrency] handlers running at most at once; 4
 * @param {number} [options.lease] seconds a request is ours before the relay hands it out again; 30, extended every lease/2 while the handler runs
 * @param {number} [options.wait] long-poll seconds; 25, under common proxy idle timeouts
 * @param {(err: unknown) => void} [options.onError] handler errors and answers the relay refused; console.error by default
 * @returns {Server}
 */
export function serve({ relay, net, key, fetch: handler, concurrency = 4, lease = 30, wait = 25, onError }) {
  const base = relayBase(relay);
  const origin = new URL(base).origin;
  const report = onError ?? ((err) => console.error("c2cvia:", err));
  if (typeof handler !== "function") throw new TypeError("serve: fetch must be a function (request) => Response");
  concurrency = Math.max(1, Math.min(100, Math.floor(concurrency))); // pullreqsmart takes max 1-100

  const stop = new AbortController();
  /** @type {Set<Promise<void>>} */
  const running = new Set();
  let freed = signal(); // resolves when a handler finishes and frees a slot

  // Polls stop on close(); extends and answers (signal null) go through.
  const server = (path, body, sig) => relayCall(base, path, body, key, sig ?? undefined);

  /** Runs one leased request: handler, extends while it runs, then pushres. */
  async function handle(item, rawBody) {
    const extendEvery = Math.max(10, (lease * 1000) / 2);
    const timer = setInterval(() => {
      server("/api/v1/server/extend", { net, rid: item.rid, lease }, null).catch((err) => {
        if (!(err instanceof RelayError && err.status === 409)) report(err); // 409: lost; pushres will tell
      });
    }, extendEvery);
    let simRes;
    try {
      simRes = await answer(handler, () => toRequest(origin, item, rawBody), report);
    } finally {
      clearInterval(timer);
    }
    // The answer is posted even while closing: close() waits for it. A
    // transient failure is retried a few times; the lease covers a lost one.
    for (let attempt = 0; ; attempt++) {
      try {
        await server("/api/v1/server/pushres", { net, rid: item.rid, sim_res: simRes }, null);
        return;
      } catch (err) {
        if (!transient(err) || attempt >= 4) {
          report(err); // 409 already answered / lease lost, 404 gone: not fatal
          return;
        }
        await sleep(backoff(attempt, err));
      }
    }
  }

  async function loop() {
    let failures = 0;
    while (!stop.signal.aborted) {
      if (running.size >= concurrency) {
        await freed.promise;
        continue;
      }
      let reply;
      try {
        reply = await server("/api/v1/server/pullreqsmart", { net, wait, max: concurrency - running.size, lease }, stop.signal);
      } catch (err) {
        if (stop.signal.aborted) break;
        if (!transient(err)) throw err; // 400 bad net, 401 no key, 403 wrong key: fatal
        await sleep(backoff(failures++, err), stop.signal).catch(() => {});
        continue;
      }
      failures = 0;
      const raws = rawElements(rawField(reply.text, "requests") ?? "[]");
      reply.json.requests.forEach((item, i) => {
        const raw = rawField(rawField(raws[i] ?? "{}", "sim_req") ?? "{}", "simBody");
        const p = handle(item, raw)
          .catch(report)
          .finally(() => {
            running.delete(p);
            const f = freed;
            freed = signal();
            f.resolve();
          });
        running.add(p);
      });
    }
  }

  const closed = loop().then(
    async () => {
      await Promise.all(running);
    },
    async (err) => {
      stop.abort();
      await Promise.all(running);
      throw err;
    },
  );
  return {
    closed,
    /** Stops polling, waits for running handlers to post their answers. */
    async close() {
      stop.abort();
      freed.resolve();
      await closed.catch(() => {});
    },
  };
}

/** Calls the handler and maps its Response (or failure) to a sim_res. */
async function answer(handler, request, report) {
  try {
    const res = await handler(request());
    if (!(res instanceof Response)) throw new TypeError("the fetch handler did not return a Response");
    return await toSimRes(res);
  } catch (err) {
    report(err);
    return { simStatus: 500, simHeaders: { "content-type": "text/plain" }, simBody: "internal server error" };
  }
}

/** Maps a leased sim_req to a standard Request. rawBody keeps a JSON body's digits. */
function toRequest(origin, item, rawBody) {
  const sim = item.sim_req;
  let endpoint = sim.simEndpoint;
  if (!endpoint.startsWith("/")) endpoint = "/" + endpoint;
  const url = new URL(origin + endpoint); // the escaped path stays escaped
  url.search = "";
  for (const [name, value] of Object.entries(sim.simQueryParams ?? {})) {
    for (const v of [value].flat()) url.searchParams.append(name, String(v));
  }
  const method = (sim.simMethod ?? "POST").toUpperCase();
  const headers = headersFrom(sim.simHeaders, ["content-length", "host"]);
  // set replaces any value the caller sent: only the relay says who asked.
  headers.set("C2cvia-From", item.from);
  headers.set("C2cvia-Rid", item.rid);
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    body = decodeBody(sim.simBody, sim.simBodyEncoding, rawBody, headers, true);
  }
  return new Request(url, { method, headers, body });
}

/** Maps a handler's Response to a sim_res. */
async function toSimRes(res) {
  /** @type {Record<string, string | string[]>} */
  const simHeaders = {};
  res.headers.forEach((value, name) => {
    if (name !== "set-cookie" && name !== "content-length" && !hopByHop(name)) simHeaders[name] = value;
  });
  const cookies = res.headers.getSetCookie?.() ?? [];
  if (cookies.length) simHeaders["set-cookie"] = cookies.length === 1 ? cookies[0] : cookies;
  const bytes = new Uint8Array(await res.arrayBuffer());
  /** @type {{simStatus: number, simHeaders: object, simBody: string | null, simBodyEncoding?: string}} */
  const sim = { simStatus: res.status, simHeaders, simBody: null };
  if (bytes.length === 0) return sim;
  const text = textLike(res.headers.get("content-type")) ? utf8(bytes) : undefined;
  if (text !== undefined) {
    sim.simBody = text; // JSON too: as text, so no digit is lost
  } else {
    sim.simBody = toBase64(bytes);
    sim.simBodyEncoding = "base64";
  }
  return sim;
}

// ---------------------------------------------------------------------------
// Sessions: a SimClient login, its fetch and its peer messages.

/**
 * @typedef {object} Message
 * @property {number} id the cursor: pass it as `since` to resume after it
 * @property {"unicast" | "multicast" | "broadcast"} kind
 * @property {string} from the sender's peer_id
 * @property {string | null} topic the topic of a multicast, else null
 * @property {unknown} data any JSON value
 * @property {Date} sentAt
 */

/**
 * @typedef {object} Session
 * @property {string} token the secret of this login
 * @property {string} peerId its public id in the net
 * @property {string} net
 * @property {Date} expiresAt
 * @property {(input: RequestInfo | URL, init?: RequestInit) => Promise<Response>} fetch
 *   standard fetch through the relay to the net's SimServer; only the path and query of the URL are used
 * @property {(peerId: string, data: unknown) => Promise<{id: number}>} send
 * @property {(topic: string) => Promise<{topic: string, subscribed: boolean}>} subscribe
 * @property {(topic: string) => Promise<{topic: string, subscribed: boolean}>} unsubscribe
 * @property {(topic: string, data: unknown) => Promise<{id: number, receivers: number}>} publish
 * @property {(data: unknown) => Promise<{id: number, receivers: number}>} broadcast
 * @property {(options?: {since?: number}) => AsyncIterableIterator<Message>} messages
 *   incoming messages, oldest first; without since, from the oldest the relay kept
 * @property {() => void} close ends every open messages() iterator and in-flight call
 */

/**
 * Logs in to net as a SimClient.
 * @param {{relay?: string, net: string}} options
 * @returns {Promise<Session>}
 */
export async function login({ relay, net }) {
  const base = relayBase(relay);
  const { json } = await relayCall(base, "/api/v1/client/login", { net });
  const token = json.token;
  const closing = new AbortController();
  const call = (path, body, sig) => relayCall(base, path, body, token, anySignal(closing.signal, sig));

  /** @type {Session} */
  const session = {
    token,
    peerId: json.peer_id,
    net: json.net,
    expiresAt: new Date(json.expires_at),
    fetch: (input, init) => clientFetch(base, call, input, init),
    send: async (peerId, data) => (await call("/api/v1/peer/send", { to: peerId, data })).json,
    subscribe: async (topic) => (await call("/api/v1/peer/subscribe", { topic })).json,
    unsubscribe: async (topic) => (await call("/api/v1/peer/unsubscribe", { topic })).json,
    publish: async (topic, data) => (await call("/api/v1/peer/publish", { topic, data })).json,
    broadcast: async (data) => (await call("/api/v1/peer/broadcast", { data })).json,
    messages: ({ since } = {}) => new MessageIterator(base, token, call, closing.signal, since),
    close: () => closing.abort(),
  };
  return session;
}

/** session.fetch: pushreq, then pullsmart until the answer comes. */
async function clientFetch(base, call, input, init = {}) {
  const url = input instanceof Request ? new URL(input.url) : new URL(String(input), base + "/");
  const req = new Request(input instanceof Request ? input : url, init);
  const sig = init.signal ?? (input instanceof Request ? input.signal : undefined);
  /** @type {Record<string, string | string[]>} */
  const query = {};
  for (const name of new Set(url.searchParams.keys())) {
    const all = url.searchParams.getAll(name);
    query[name] = all.length === 1 ? all[0] : all;
  }
  /** @type {Record<string, string>} */
  const headers = {};
  req.headers.forEach((value, name) => (headers[name] = value));
  const sim = {
    simEndpoint: url.pathname,
    simMethod: req.method,
    simHeaders: headers,
    simQueryParams: query,
    simRouteParams: {},
  };
  // JSON goes in as its own text, spliced into the body, so numbers keep
  // every digit; other bodies are a string or base64.
  let simBody = "null";
  const bytes = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
  if (bytes.length > 0) {
    const type = mediaType(req.headers.get("content-type"));
    const text = utf8(bytes);
    if (text !== undefined && isJSONType(type) && parses(text)) {
      simBody = text;
    } else if (text !== undefined && (type === "" || textLike(type))) {
      simBody = JSON.stringify(text);
    } else {
      simBody = JSON.stringify(toBase64(bytes));
      sim.simBodyEncoding = "base64";
    }
  }
  const body = '{"sim_req":' + JSON.stringify(sim).slice(0, -1) + ',"simBody":' + simBody + "}}";
  const { json } = await call("/api/v1/client/pushreq", new RawJSON(body), sig);
  const rid = json.rid;

  for (let failures = 0; ; ) {
    let reply;
    try {
      reply = await call("/api/v1/client/pullsmart", { rid, wait: 25 }, sig);
    } catch (err) {
      // The request is stored: a lost poll is asked again, not failed.
      if (!transient(err) || failures >= 9) throw err;
      await sleep(backoff(failures++, err), sig);
      continue;
    }
    failures = 0;
    if (reply.status === 200) {
      const raw = rawField(rawField(reply.text, "sim_res") ?? "{}", "simBody");
      return toResponse(reply.json.sim_res, raw);
    }
  }
}

/** Maps a sim_res to a standard Response, as the /via/ gateway writes it. */
function toResponse(sim, rawBody) {
  const status = sim.simStatus ?? 200;
  if (status < 200) {
    throw new RelayError(502, "bad_gateway", `the SimServer answered ${status}, which is not a final HTTP status`);
  }
  const headers = headersFrom(sim.simHeaders, ["content-length"]);
  let body = decodeBody(sim.simBody, sim.simBodyEncoding, rawBody, headers, false);
  if (status === 204 || status === 205 || status === 304) body = null;
  return new Response(body, { status, headers });
}

/**
 * The messages of a session, oldest first: long-polls pullsmart, or reads
 * the event stream where EventSource exists. Resumes after the last message
 * it received across reconnects; return() (a `break` out of for-await)
 * releases the connection at once.
 * @implements {AsyncIterableIterator<Message>}
 */
class MessageIterator {
  constructor(base, token, call, closing, since) {
    this.base = base;
    this.token = token;
    this.call = call;
    this.stop = new AbortController();
    this.signal = anySignal(closing, this.stop.signal);
    this.signal.addEventListener("abort", () => this.finish());
    /** @type {number | undefined} the cursor: after the last message received */
    this.since = since;
    /** @type {Message[]} */
    this.buffer = [];
    this.done = false;
    /** @type {unknown} a fatal error for the next next() */
    this.error = undefined;
    this.wake = signal();
    this.source = null; // the EventSource, on that path
    if (this.signal.aborted) this.finish();
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<Message>>} */
  async next() {
    for (let failures = 0; ; ) {
      if (this.buffer.length > 0) return { value: this.buffer.shift(), done: false };
      if (this.error !== undefined) {
        const err = this.error;
        this.error = undefined;
        this.finish();
        throw err;
      }
      if (this.done) return { value: undefined, done: true };
      try {
        if (typeof globalThis.EventSource === "function") {
          await this.streamed();
        } else {
          await this.pulled();
        }
        failures = 0;
      } catch (err) {
        if (this.signal.aborted) continue; // ends as done
        if (err instanceof RelayError && err.code === "cursor_ahead" && this.since !== undefined) {
          // The relay's store was restored or replaced: start over from
          // the oldest message it keeps (some may come again).
          this.since = undefined;
          continue;
        }
        if (!transient(err)) {
          this.error = err;
          continue;
        }
        await sleep(backoff(failures++, err), this.signal).catch(() => {});
      }
    }
  }

  /** @returns {Promise<IteratorResult<Message>>} */
  async return() {
    this.stop.abort();
    return { value: undefined, done: true };
  }

  /** One long poll of pullsmart into the buffer. */
  async pulled() {
    const body = { wait: 25 };
    if (this.since !== undefined) body.since = this.since;
    const { json } = await this.call("/api/v1/peer/pullsmart", body, this.signal);
    this.buffer.push(...json.messages.map(toMessage));
    this.since = json.next;
  }

  /** Waits for the event stream to bring a message (opening it if needed). */
  async streamed() {
    if (!this.source) this.open();
    // A stream that gave up while nobody iterated has kicked already: do
    // not wait for a kick that came before this call.
    if (this.source.readyState !== 2 /* CLOSED */) await this.wake.promise;
    if (this.source && this.source.readyState === 2 /* CLOSED */) {
      // The browser gave up (a non-stream answer such as 401 or 503) and
      // cannot say why. Ask the relay with a poll that returns at once: a
      // fatal error is thrown as is; otherwise back off (next() does) and
      // open the stream again after the last message received.
      this.source = null;
      const body = { wait: 0, max: 1 };
      if (this.since !== undefined) body.since = this.since;
      await this.call("/api/v1/peer/pullsmart", body, this.signal);
      throw new Error("the event stream closed");
    }
  }

  open() {
    const url = new URL(this.base + "/api/v1/peer/stream");
    url.searchParams.set("token", this.token);
    if (this.since !== undefined) url.searchParams.set("since", String(this.since));
    const source = new globalThis.EventSource(url.toString());
    this.source = source;
    const kick = () => {
      const w = this.wake;
      this.wake = signal();
      w.resolve();
    };
    source.onmessage = (ev) => {
      if (this.source !== source) return;
      const m = toMessage(JSON.parse(ev.data));
      this.since = m.id;
      this.buffer.push(m);
      kick();
    };
    source.onerror = () => {
      if (this.source === source && source.readyState === 2) kick(); // else it reconnects by itself
    };
  }

  finish() {
    this.done = true;
    this.source?.close();
    this.source = null;
    this.buffer.length = 0;
    this.wake.resolve();
  }
}

/** @returns {Message} */
function toMessage(m) {
  return { id: m.id, kind: m.kind, from: m.from, topic: m.topic ?? null, data: m.data, sentAt: new Date(m.sent_at) };
}

// ---------------------------------------------------------------------------
// Talking to the relay.

/** A request body that is JSON text already. */
class RawJSON {
  constructor(text) {
    this.text = text;
  }
}

/**
 * POSTs a JSON body to the relay with a Bearer secret and returns the
 * reply; any status of 300 or more rejects with a RelayError.
 * @returns {Promise<{status: number, text: string, json: any}>}
 */
async function relayCall(base, path, body, secret, sig) {
  /** @type {Record<string, string>} */
  const headers = { "Content-Type": "application/json" };
  if (secret) headers.Authorization = "Bearer " + secret;
  const res = await globalThis.fetch(base + path, {
    method: "POST",
    headers,
    body: body instanceof RawJSON ? body.text : JSON.stringify(body),
    signal: sig,
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: a proxy's error page, say
  }
  if (res.status >= 300) {
    const e = json?.error;
    const retryAfter = Number(res.headers.get("Retry-After")) || undefined;
    if (e && typeof e.code === "string") throw new RelayError(res.status, e.code, String(e.message ?? e.code), retryAfter);
    throw new RelayError(res.status, "http_" + res.status, `the relay answered ${res.status} ${res.statusText}`.trim(), retryAfter);
  }
  return { status: res.status, text, json };
}

/** The relay's base URL without a trailing slash. */
function relayBase(relay) {
  if (relay === undefined || relay === null || relay === "") {
    if (globalThis.location?.origin) return globalThis.location.origin;
    throw new TypeError("relay is required outside a browser page, e.g. relay: \"http://localhost:8080\"");
  }
  return String(relay).replace(/\/+$/, "");
}

/** Whether a failure is worth another try: the network, 408, 429 or 5xx. */
function transient(err) {
  if (err instanceof RelayError) return err.status === 408 || err.status === 429 || err.status >= 500;
  return !(err instanceof Error && err.name === "AbortError");
}

/**
 * The delay before retry number n (0-based): 250 ms doubling up to 30 s,
 * with jitter (half to all of it), at least Retry-After when the relay sent
 * one.
 */
function backoff(n, err) {
  const ceiling = Math.min(30_000, 250 * 2 ** Math.min(n, 10));
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  const after = err instanceof RelayError && err.retryAfter ? err.retryAfter * 1000 : 0;
  return Math.max(delay, after);
}

/** Resolves after ms, or rejects with the signal's reason when it aborts. */
function sleep(ms, sig) {
  return new Promise((resolve, reject) => {
    if (sig?.aborted) return reject(sig.reason);
    const t = setTimeout(() => {
      sig?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(sig.reason);
    };
    sig?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A promise with its resolve function outside. */
function signal() {
  let resolve = () => {};
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

/** A signal that aborts when any of the given ones does. */
function anySignal(...signals) {
  const list = signals.filter(Boolean);
  if (list.length === 1) return list[0];
  if (typeof AbortSignal.any === "function") return AbortSignal.any(list); // lets go of finished calls
  const c = new AbortController();
  for (const s of list) {
    if (s.aborted) {
      c.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => c.abort(s.reason), { once: true, signal: c.signal });
  }
  return c.signal;
}

// ---------------------------------------------------------------------------
// Bodies and headers.

/** Headers from simHeaders (a value is a string or an array), skipping drop and hop-by-hop ones. */
function headersFrom(simHeaders, drop) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(simHeaders ?? {})) {
    const lower = name.toLowerCase();
    if (drop.includes(lower) || hopByHop(lower)) continue;
    for (const v of [value].flat()) {
      try {
        headers.append(name, String(v));
      } catch {
        // a name or value the platform refuses: leave it out
      }
    }
  }
  return headers;
}

/**
 * A simBody as a body: base64 -> bytes, a string -> its text, null -> none,
 * any other JSON value -> its JSON text (raw, when known, to keep digits)
 * with Content-Type application/json unless one is set. With forms, an
 * object under application/x-www-form-urlencoded becomes a form again.
 */
function decodeBody(simBody, encoding, raw, headers, forms) {
  if (encoding === "base64" && typeof simBody === "string") return fromBase64(simBody);
  if (simBody === null || simBody === undefined) return null;
  if (typeof simBody === "string") return simBody;
  const type = mediaType(headers.get("content-type"));
  if (forms && type === "application/x-www-form-urlencoded" && typeof simBody === "object" && !Array.isArray(simBody)) {
    const form = new URLSearchParams();
    for (const [k, v] of Object.entries(simBody)) for (const x of [v].flat()) form.append(k, String(x));
    return form.toString();
  }
  if (!headers.has("content-type")) headers.set("content-type", "application/json");
  return raw ?? JSON.stringify(simBody);
}

const HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

function hopByHop(lowerName) {
  return HOP_BY_HOP.includes(lowerName) || lowerName.startsWith("proxy-");
}

/** The media type of a Content-Type, lower case, without parameters. */
function mediaType(contentType) {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

function isJSONType(type) {
  return type === "application/json" || type.endsWith("+json");
}

/** Text-like media types travel as strings (when valid UTF-8); others as base64. */
function textLike(contentType) {
  const t = mediaType(contentType);
  if (t.startsWith("text/") || isJSONType(t) || t.endsWith("+xml")) return true;
  return ["application/xml", "application/javascript", "application/x-www-form-urlencoded"].includes(t);
}

function parses(text) {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of bytes, or undefined when they are not valid UTF-8. */
function utf8(bytes) {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

function toBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function fromBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

// ---------------------------------------------------------------------------
// Raw JSON text of one value inside a reply, so a JSON body reaches the
// handler (or the caller) with every digit: JSON.parse would round a
// 20-digit number. The text was parsed once already, so it is valid.

/** The raw text of key's value in the JSON object text, or undefined. */
function rawField(text, key) {
  let i = skipSpace(text, 0);
  if (text[i] !== "{") return undefined;
  let found;
  i = skipSpace(text, i + 1);
  while (text[i] !== "}") {
    const keyEnd = valueEnd(text, i);
    const name = JSON.parse(text.slice(i, keyEnd));
    const start = skipSpace(text, skipSpace(text, keyEnd) + 1); // past ':'
    const end = valueEnd(text, start);
    if (name === key) found = text.slice(start, end); // the last one wins, as in JSON.parse
    i = skipSpace(text, end);
    if (text[i] === ",") i = skipSpace(text, i + 1);
  }
  return found;
}

/** The raw texts of the elements of the JSON array text. */
function rawElements(text) {
  const out = [];
  let i = skipSpace(text, 0);
  if (text[i] !== "[") return out;
  i = skipSpace(text, i + 1);
  while (text[i] !== "]") {
    const end = valueEnd(text, i);
    out.push(text.slice(i, end));
    i = skipSpace(text, end);
    if (text[i] === ",") i = skipSpace(text, i + 1);
  }
  return out;
}

function skipSpace(text, i) {
  while (i < text.length && (text[i] === " " || text[i] === "\n" || text[i] === "\r" || text[i] === "\t")) i++;
  return i;
}

/** The index just past the JSON value that starts at i. */
function valueEnd(text, i) {
  const c = text[i];
  if (c === '"') {
    for (i++; text[i] !== '"'; i++) if (text[i] === "\\") i++;
    return i + 1;
  }
  if (c === "{" || c === "[") {
    let depth = 0;
    for (; i < text.length; i++) {
      const d = text[i];
      if (d === '"') i = valueEnd(text, i) - 1;
      else if (d === "{" || d === "[") depth++;
      else if ((d === "}" || d === "]") && --depth === 0) return i + 1;
    }
    return i;
  }
  while (i < text.length && !",}] \n\r\t".includes(text[i])) i++;
  return i;
}
