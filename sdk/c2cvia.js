// c2cvia.js: the JavaScript SDK of the c2cvia relay. One ES module, no
// dependencies, no build step; it runs unchanged in browsers and Node 20+.
//
//   import { serve, login } from "https://RELAY/sdk/c2cvia.js";
//   serve({ relay, net, key, fetch: (req) => new Response("hi") });  // play the server
//   const s = await login({ relay, net });  await s.fetch("/hello"); // reach it
//
// The wire contract is the relay's docs/API.md; this file maps standard
// Request/Response objects to sim_req/sim_res and back by the rules of the
// Go package internal/simhttp ("HTTP ⇄ sim mapping" below).

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
 * @typedef {object} NetAddr the shape of Deno.NetAddr
 * @property {"tcp"} transport
 * @property {string | undefined} hostname the IP address, an IPv6 one without brackets ("2001:db8::1"); undefined when the relay did not tell
 * @property {number | undefined} port 0 behind a --trust-proxy proxy, which tells no port; undefined when the relay did not tell
 *
 * @typedef {object} HandlerInfo the shape of Deno.serve's ServeHandlerInfo, and more
 * @property {NetAddr} remoteAddr the caller's address as the relay saw it; always an object, its hostname and port undefined from a relay that does not tell
 * @property {AbortSignal} signal request.signal itself: aborts when the caller withdraws the request, its lease is lost, or (for a streaming answer) serve stops
 * @property {Promise<void>} completed resolves once the relay has the whole answer (the 500 of a handler that threw, or onError's Response, included); rejects once it is abandoned: withdrawn (with signal's reason), refused by the relay (a 502 went instead) or not sent after the retries (the error). A handler need not look at it: its rejection is never unhandled
 * @property {string} from the caller's peer_id, `via` for /via/ gateway requests
 * @property {string} rid the request's id
 * @property {string} target the path and query exactly as the caller sent them (request.url is parsed, which removes dot segments)
 *
 * @typedef {(request: Request, info: HandlerInfo) => Response | Promise<Response>} FetchHandler
 * @typedef {{ close(): Promise<void>, closed: Promise<void> }} Server
 */

/**
 * Serves the requests of net with a standard fetch handler (the shape of
 * Deno.serve, Cloudflare Workers and Hono's app.fetch). The request is the
 * one the caller sent: its URL names the host and scheme the caller asked
 * for (Host and X-Forwarded-Proto, else the relay's), its headers and body
 * are as sent. The handler also sees the caller's peer_id (`via` for /via/
 * gateway requests) in the request header `C2cvia-From` and the request id
 * in `C2cvia-Rid`, and all of it in its second argument, info.
 *
 * Answers in parts: a Response whose body has ended by the time its first
 * bytes are read, and holds at most 512 KiB, is posted whole. Any other
 * body streams (server-sent events, progress, large downloads): the status,
 * headers and the bytes at hand go out at once (pushres with more), then
 * each further chunk as it comes (pushpart, chunks already waiting joined,
 * at most 512 KiB a part, so memory stays bounded), the last with last. A
 * handler whose answer streams no longer counts against concurrency.
 *
 * One round trip for an answer and the next requests: a small whole answer
 * that is ready when the loop polls goes with that poll (pullreqsmart's
 * answers), and after handing out the requests a poll brought, the loop
 * waits up to linger for their answers to be ready (no longer than it
 * takes them). An answer ready while a poll waits at the relay goes at once
 * by its own pushres: it never waits for requests to come.
 *
 * Cancellation: request.signal aborts (an AbortError) when the caller
 * withdraws the request (a /via/ caller that goes away, a session.fetch
 * aborted or whose body is cancelled), when its lease is lost, and for a
 * streaming answer on close(); serve keeps one watch on the running
 * handlers' rids for this, so the signal aborts within a second. A
 * streaming body is then cancelled (its source's cancel() runs). The
 * signal option stops serving as close() does.
 *
 * A handler that throws answers 500 `internal server error`, or the
 * Response that onError returns for the error (a Promise of one too); an
 * onError that throws, rejects or returns anything else leaves the 500.
 * A request that maps to no Request (a CONNECT, a broken
 * simBody) answers 400. A head the relay refuses answers 502
 * `response_too_large` or `invalid_response`, so the caller hears at once
 * and the handler does not run again. A body stream that errors after its
 * head was sent ends the answer early, as a reverse proxy does when its
 * upstream fails: the caller sees the body cut off, never a clean end.
 * Network errors, 5xx and 429 are retried with backoff: an answer or a
 * part (with its same offset, so it is never written twice) is tried
 * retries + 1 times in all, then given up (onError, info.completed
 * rejects); the poll is tried for as long as serve runs, a lease's
 * extension again at its next turn. A 4xx on the poll (bad net, wrong
 * key) stops serving and rejects `closed`.
 *
 * @param {object} options
 * @param {string} [options.relay] the relay's URL; in a browser, location.origin by default
 * @param {string} options.net
 * @param {string} options.key the net's key, 16 characters or more (the first key used claims the net)
 * @param {FetchHandler} options.fetch
 * @param {number} [options.concurrency] handlers running at most at once, streaming ones not counted; 4
 * @param {number} [options.lease] seconds a request is ours before the relay hands it out again (or aborts its stream); 30, extended every lease/2 while the handler runs or streams
 * @param {number} [options.wait] long-poll seconds; 25, under common proxy idle timeouts
 * @param {boolean} [options.preflight] forward the browser CORS preflights (OPTIONS) of the net's gateway to the handler instead of letting the relay answer them; false
 * @param {number} [options.linger] milliseconds the loop waits, after handing out the requests a poll brought, for their answers to go with the next poll; 2 (a quick handler's answer is ready within it; a slow one's goes by pushres), 0 polls at once
 * @param {(err: unknown) => void | Response | Promise<Response | void>} [options.onError] handler errors and answers the relay refused; console.error by default. For a handler's error, a Response it returns is the answer instead of the 500. A handler that rejects with its request.signal's reason, once the request was withdrawn, is not reported
 * @param {AbortSignal} [options.signal] aborting it stops serving, as close() does
 * @param {number} [options.retries] further tries of a call refused for now (a network error, 408, 429, 5xx); 9
 * @param {{initial?: number, max?: number}} [options.backoff] ms before the first retry (doubling, with jitter) and at most; 250 and 30000
 * @returns {Server}
 */
export function serve({
  relay, net, key, fetch: handler, concurrency = defaults.concurrency, lease = defaults.lease, wait = defaults.wait,
  preflight = false, linger = defaults.linger, onError, signal: until, retries, backoff,
}) {
  const base = relayBase(relay);
  const relayURL = new URL(base);
  if (typeof handler !== "function") throw new TypeError("serve: fetch must be a function (request, info) => Response");
  if (onError !== undefined && typeof onError !== "function") throw new TypeError("serve: onError must be a function (err) => void | Response");
  if (until !== undefined && !(until instanceof AbortSignal)) throw new TypeError("serve: signal must be an AbortSignal");
  const policy = retryPolicy("serve", retries, backoff);
  /** onError's word on err: what it returned, or undefined when it threw (a rejection is let go too) */
  const tell = (err) => {
    try {
      const r = (onError ?? ((e) => console.error("c2cvia:", e)))(err);
      if (typeof r?.then === "function") r.then(undefined, () => {});
      return r;
    } catch {
      return undefined;
    }
  };
  const report = (err) => void tell(err);
  concurrency = Math.max(1, Math.min(100, Math.floor(concurrency))); // pullreqsmart takes max 1-100
  linger = Math.min(Math.max(0, Number(linger) || 0), 2 ** 31 - 1); // setTimeout's range

  const stop = new AbortController();
  /** @type {Set<Promise<void>>} every handler's work, streams included: close() waits for it */
  const running = new Set();
  /** @type {Map<string, Job>} the requests being handled or streamed, by rid */
  const jobs = new Map();
  let busy = 0; // handlers holding a slot: running and not yet streaming
  let freed = signal(); // resolves when a slot frees
  const free = () => {
    busy--;
    const f = freed;
    freed = signal();
    f.resolve();
  };

  // Polls stop on close(); extends and answers (signal null) go through.
  const server = (path, body, sig) => relayCall(base, path, body, key, sig ?? undefined);
  const watch = watcher(server, net, wait, jobs, report, policy);
  const outbox = new Outbox();

  // close() ends the streams: nothing else would.
  stop.signal.addEventListener("abort", () => {
    for (const job of jobs.values()) if (job.streaming) job.withdraw(closing(), false);
    freed.resolve();
  });
  if (until?.aborted) stop.abort();
  until?.addEventListener("abort", () => stop.abort(), { once: true, signal: stop.signal });

  /** Runs one leased request (its sim_req as raw JSON text): handler, extends while it runs and streams, then the answer. */
  async function handle(job, item, simReq) {
    jobs.set(job.rid, job);
    watch.changed();
    let slot = true;
    const release = () => {
      if (slot) (slot = false), free();
    };
    const extendEvery = Math.max(10, (lease * 1000) / 2);
    const timer = setInterval(() => {
      if (job.signal.aborted) return; // a withdrawn stream's lease is cut short, not renewed
      if (job.withPoll) return; // answered, as far as this loop can tell: the reply says
      server("/api/v1/server/extend", { net, rid: job.rid, lease }, null).catch((err) => {
        if (gone(err)) job.withdraw(err, true);
        else if (!(err instanceof RelayError && err.status === 409)) report(err); // 409: lost; the answer will tell
      });
    }, extendEvery);
    try {
      const a = await answer(handler, item, simReq, relayURL, tell, job);
      if (job.signal.aborted) {
        if (!("simRes" in a)) a.body.cancel(job.signal.reason);
        return; // withdrawn: nobody waits for the answer
      }
      if ("simRes" in a) {
        await sendWhole(job, a.simRes, undefined, release);
      } else if (a.body.ended && a.bytes.length <= PART_SIZE) {
        const simRes = toSimRes({ status: a.status, headers: a.headers, body: a.bytes.length ? a.bytes : null });
        await sendWhole(job, simRes, () => postStream(job, a, release), release);
      } else {
        job.ready.resolve();
        await postStream(job, a, release);
      }
    } finally {
      job.ready.resolve();
      clearInterval(timer);
      release();
      jobs.delete(job.rid);
      watch.changed();
      job.settle();
    }
  }

  /**
   * Sends a whole answer: with the next poll when the loop is between
   * polls and it is small (the handler's slot is free meanwhile), else by
   * pushres. What the poll's reply says of it is dealt with as pushres's
   * answer would be.
   * @param {Job} job
   * @param {SimResponse} simRes
   * @param {(() => Promise<void>) | undefined} instead
   * @param {() => void} release
   */
  async function sendWhole(job, simRes, instead, release) {
    const outcome = outbox.offer(job.rid, simRes);
    job.ready.resolve();
    if (!outcome) return postWhole(job, simRes, instead);
    release(); // it waits for the poll, not for a slot
    job.withPoll = true;
    const o = await outcome;
    job.withPoll = false;
    if (o.delivered) job.sent = true;
    else await postWhole(job, simRes, instead, o);
  }

  /**
   * Posts a whole answer. The answer is posted even while closing: close()
   * waits for it. A transient failure is retried a few times; the lease
   * covers a lost one. An answer the relay finds too large to take whole
   * goes to instead(), which streams it. first is what a poll that carried
   * it said (err, its pushres error) or may have done (resent: the relay
   * may have taken it, so already_answered means it was delivered).
   * @param {Job} job
   * @param {SimResponse} simRes
   * @param {() => Promise<void>} [instead]
   * @param {{err?: RelayError, resent?: boolean}} [first]
   */
  async function postWhole(job, simRes, instead, { err: first, resent = false } = {}) {
    for (let attempt = 0; ; attempt++) {
      try {
        if (first) throw first;
        await server("/api/v1/server/pushres", { net, rid: job.rid, sim_res: simRes }, null);
        job.sent = true;
        return;
      } catch (err) {
        first = undefined;
        if (resent && err instanceof RelayError && err.code === "already_answered") return void (job.sent = true); // by the call whose reply was lost
        if (!(err instanceof RelayError)) resent = true; // lost on the way back, perhaps: the relay may have it
        if (instead && err instanceof RelayError && err.status === 413) return instead();
        const refused = err instanceof RelayError && (err.status === 413 || err.code === "invalid_sim_res");
        if (refused && simRes !== tooLarge && simRes !== invalidAnswer) {
          // An answer the relay cannot write (a status past 599, a header
          // it refuses): the caller hears 502 now rather than the handler
          // running again when the lease runs out.
          report(err);
          job.fail(err);
          simRes = err.status === 413 ? tooLarge : invalidAnswer;
          attempt = -1;
          continue;
        }
        if (gone(err)) return job.withdraw(err, true); // nobody waits for it
        if (!transient(err) || attempt >= policy.retries) {
          report(err); // 409 already answered / lease lost, 404 gone: not fatal
          job.fail(err);
          return;
        }
        await sleep(policy.delay(attempt, err));
      }
    }
  }

  /**
   * Streams an answer: its head with the bytes at hand (pushres with more),
   * then the rest of its body in parts (pushpart), each retried with its
   * same offset. Parts hold at most PART_SIZE bytes, halved while the relay
   * answers 413 (a relay with a --max-body below it). release frees the
   * handler's slot once the head is in.
   * @param {Job} job
   * @param {{status: number, headers: HeaderList, bytes: Uint8Array, body: PartReader}} a
   * @param {() => void} release
   */
  async function postStream(job, { status, headers, bytes, body }, release) {
    const signal = job.signal;
    const onAbort = () => body.cancel(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      let partSize = PART_SIZE;
      let buf = bytes; // read, not yet committed
      let first = buf; // the bytes the head carries
      for (let attempt = 0; ; attempt++) {
        if (signal.aborted) return;
        try {
          const head = toSimRes({ status, headers, body: first.length ? first : null });
          await server("/api/v1/server/pushres", { net, rid: job.rid, sim_res: head, more: true, lease }, null);
          break;
        } catch (err) {
          if (err instanceof RelayError && err.status === 413 && first.length) {
            first = first.subarray(0, 0); // the bytes go in parts, which shrink to fit
            attempt = -1;
            continue;
          }
          if (err instanceof RelayError && (err.status === 413 || err.code === "invalid_sim_res")) {
            report(err);
            job.fail(err);
            body.cancel(err);
            return postWhole(job, err.status === 413 ? tooLarge : invalidAnswer);
          }
          if (gone(err)) return job.withdraw(err, true);
          if (!transient(err) || attempt >= policy.retries) {
            report(err);
            job.fail(err);
            body.cancel(err);
            return;
          }
          await sleep(policy.delay(attempt, err));
        }
      }
      let offset = first.length;
      buf = buf.subarray(first.length);
      job.streaming = true;
      release();
      if (stop.signal.aborted) job.withdraw(closing(), false);

      for (;;) {
        if (buf.length === 0 && !body.ended) {
          try {
            buf = await body.take(partSize, true);
          } catch (err) {
            if (signal.aborted) return;
            report(err); // the handler's stream failed: the answer ends early
            job.fail(err);
            job.withdraw(err, false);
            return;
          }
        }
        if (signal.aborted) return;
        const part = buf.subarray(0, partSize);
        const last = body.ended && part.length === buf.length;
        for (let attempt = 0; ; attempt++) {
          if (signal.aborted) return;
          try {
            const query = { net, rid: job.rid, offset, lease };
            if (last) query.last = true;
            await relayPart(base, "/api/v1/server/pushpart", query, part, key);
            break;
          } catch (err) {
            if (err instanceof RelayError && err.status === 413 && part.length > 1) {
              partSize = part.length >> 1;
              break;
            }
            if (gone(err)) return job.withdraw(err, true);
            if (!transient(err) || attempt >= policy.retries) {
              report(err); // 409 offset_mismatch: a part went missing; nothing to mend
              job.fail(err);
              job.withdraw(err, false);
              return;
            }
            await sleep(policy.delay(attempt, err));
          }
        }
        if (part.length > partSize) continue; // split: the same bytes in smaller parts
        offset += part.length;
        buf = buf.subarray(part.length);
        if (last) return void (job.sent = true);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (signal.aborted) {
        body.cancel(signal.reason);
        // Withdrawn by the SDK itself (close, a failed body): the stream
        // ends now, aborted, rather than at its lease's end; one the relay
        // withdrew needs no word.
        if (job.streaming && !job.byRelay) {
          await server("/api/v1/server/extend", { net, rid: job.rid, lease: 0.001 }, null).catch(() => {});
        }
      }
    }
  }

  /**
   * Polls for requests and starts a handler for each, carrying the answers
   * that are ready. A poll whose reply was lost goes again with the same
   * answers (resent: already_answered then means delivered); one the relay
   * refused whole (400, 413: nothing written) goes again without them,
   * which then go by pushres. Answers held when the loop ends go by pushres.
   */
  async function loop() {
    let failures = 0;
    /** @type {Outgoing[]} what the poll carries */
    let carried = [];
    let resent = false;
    try {
      while (!stop.signal.aborted) {
        if (busy >= concurrency) {
          await freed.promise;
          continue;
        }
        if (carried.length === 0) carried = outbox.take(); // until the reply, an answer goes by pushres
        let reply;
        try {
          /** @type {Record<string, unknown>} */
          const poll = { net, wait, max: concurrency - busy, lease };
          if (preflight) poll.preflight = true;
          if (carried.length) {
            poll.answers = carried.map(({ rid, simRes }) => ({ rid, sim_res: simRes }));
            // A relay that does not know answers would keep them while it
            // waits: until one has said what it did with them, do not wait.
            if (!outbox.proven) poll.wait = 0;
          }
          reply = await server("/api/v1/server/pullreqsmart", poll, stop.signal);
        } catch (err) {
          if (stop.signal.aborted) break;
          if (carried.length && !transient(err)) {
            if (err instanceof RelayError && err.status === 413) outbox.limit >>= 1; // a relay with a smaller --max-body
            settleCarried(carried, undefined, resent);
            carried = [];
            resent = false;
            continue; // a fatal error (a wrong key) comes again without them
          }
          if (!transient(err)) throw err; // 400 bad net, 401 no key, 403 wrong key: fatal
          // The reply may be lost, or the poll may have failed after its
          // answers were posted (its wait, its lease): they may be taken.
          resent = true;
          await sleep(policy.delay(Math.min(failures++, 60), err), stop.signal).catch(() => {});
          continue;
        }
        failures = 0;
        if (carried.length) {
          // A relay that does not know answers ignores them: pushres from now on.
          if (Array.isArray(reply.json.answers)) outbox.proven = true;
          else outbox.enabled = false;
          settleCarried(carried, reply.json.answers, resent);
          carried = [];
          resent = false;
        }
        outbox.open = true;
        // The sim_req goes on as raw text, so a JSON body keeps every digit.
        const raws = rawElements(rawField(reply.text, "requests") ?? "[]");
        const started = reply.json.requests.map((item, i) => {
          const simReq = rawField(raws[i] ?? "{}", "sim_req") ?? "{}";
          const job = new Job(item.rid);
          busy++;
          const p = handle(job, item, simReq)
            .catch(report)
            .finally(() => running.delete(p));
          running.add(p);
          return job.ready.promise;
        });
        if (started.length) await lingerFor(started);
      }
    } finally {
      // The relay may have taken what an aborted poll carried.
      settleCarried(carried, undefined, true);
      settleCarried(outbox.take(), undefined, false);
      outbox.enabled = false;
    }
  }

  /** Waits until the answers of the handlers just started are at hand, linger ms at most, or close(). */
  function lingerFor(ready) {
    if (linger === 0) return;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, linger);
      stop.signal.addEventListener("abort", done);
      Promise.all(ready).then(done);
    });
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
    /** Stops polling, waits for running handlers to post their answers; ends the streaming ones (their request.signal aborts, their answers end early). */
    async close() {
      stop.abort();
      await closed.catch(() => {});
    },
  };
}

/** 512 KiB: the most body bytes one part carries, half the relay's default --max-body (the most a part may hold). */
const PART_SIZE = 512 << 10;

/**
 * The whole answers that go with serve()'s next poll (pullreqsmart's
 * answers). It takes them only while open, between a poll's reply and the
 * next poll: one ready while a poll waits at the relay would wait with it.
 * Small answers only, BATCH_ANSWER each, limit (BATCH_BYTES, halved at
 * each poll the relay finds too large) and BATCH_COUNT a poll: a larger
 * one costs its own call anyway, and the poll stays under the relay's
 * --max-body.
 */
class Outbox {
  constructor() {
    /** whether the loop is between polls */
    this.open = false;
    /** false for a relay that does not take answers, and once the loop ends */
    this.enabled = true;
    /** whether the relay has answered a poll with the outcomes of its answers */
    this.proven = false;
    this.limit = BATCH_BYTES;
    /** @type {Outgoing[]} */
    this.held = [];
    this.bytes = 0;
  }

  /**
   * Holds simRes for the next poll when it may go there.
   * @returns {Promise<Outcome> | null} what the poll's reply says of it; null: post it by pushres
   */
  offer(rid, simRes) {
    if (!this.open || !this.enabled || this.held.length >= BATCH_COUNT) return null;
    if (typeof simRes.simBody === "string" && simRes.simBody.length > BATCH_ANSWER) return null;
    const size = utf8Encoder.encode(JSON.stringify(simRes)).length;
    if (size > BATCH_ANSWER || this.bytes + size > this.limit) return null;
    const outcome = signal();
    this.held.push({ rid, simRes, settle: outcome.resolve });
    this.bytes += size;
    return outcome.promise;
  }

  /** What the next poll carries. It closes: until the reply, an answer goes by pushres. */
  take() {
    const held = this.held;
    this.held = [];
    this.bytes = 0;
    this.open = false;
    return held;
  }
}

/**
 * @typedef {{rid: string, simRes: SimResponse, settle: (o: Outcome) => void}} Outgoing
 * @typedef {{delivered: true} | {delivered?: false, err?: RelayError, resent: boolean}} Outcome
 *   delivered, or for postWhole: the error its pushres would have had (none: post it), and
 *   whether it went out before, so already_answered means delivered
 */

/**
 * Settles the answers a poll carried by the outcomes of its reply, in the
 * order sent. One the relay took, or had taken (already_answered after a
 * lost reply), is delivered; any other error goes to postWhole as its
 * pushres's would. Without an outcome (a refused or aborted poll, a relay
 * that ignores answers) it goes by pushres.
 * @param {Outgoing[]} carried
 * @param {unknown} outcomes the reply's answers
 * @param {boolean} resent whether the relay may have taken them before
 */
function settleCarried(carried, outcomes, resent) {
  carried.forEach((a, i) => {
    if (!Array.isArray(outcomes)) return a.settle({ resent });
    const o = outcomes[i];
    if (o?.rid !== a.rid) return a.settle({ resent: true }); // a reply out of order: the relay took them
    if (o.status === "answered") return a.settle({ delivered: true });
    const e = o.error;
    if (typeof e?.status !== "number" || typeof e.code !== "string") return a.settle({ resent: true });
    if (resent && e.code === "already_answered") return a.settle({ delivered: true });
    a.settle({ err: new RelayError(e.status, e.code, String(e.message ?? e.code)), resent });
  });
}

/** 64 KiB: the largest encoded sim_res a poll carries; a larger one goes by pushres. */
const BATCH_ANSWER = 64 << 10;
/** 512 KiB: the most encoded sim_res bytes a poll carries, half the relay's default --max-body. */
const BATCH_BYTES = 512 << 10;
/** The most answers a poll carries: pullreqsmart takes 100. */
const BATCH_COUNT = 100;

/** The reason a stream ends on close(). */
const closing = () => new DOMException("the server is closing", "AbortError");

/** The relay's word that a request needs no more work (410: cancelled by its caller, aborted, expired, failed), or undefined. */
function gone(err) {
  return err instanceof RelayError && err.status === 410 ? err : undefined;
}

/** One request a handler works on: its rid, the signal its request carries, whether its answer streams. */
class Job {
  /** @param {string} rid */
  constructor(rid) {
    this.rid = rid;
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this.streaming = false;
    /** whether the relay said it needs no more work (watch, 410) */
    this.byRelay = false;
    /** resolves once the handler's answer is at hand, or it ended */
    this.ready = signal();
    /** whether its answer waits for a poll or went with one (a poll may wait 25 s at the relay before its reply says) */
    this.withPoll = false;
    /** whether the relay has taken the whole answer */
    this.sent = false;
    /** @type {unknown} why the handler's answer did not go out as it was, when it did not */
    this.failure = undefined;
    /** info.completed: resolves once the answer is sent, rejects once it is abandoned */
    this.completed = new Promise((resolve, reject) => (this.complete = { resolve, reject }));
    this.completed.catch(() => {}); // a handler need not look at it
  }

  /** @param {unknown} err why the answer did not go out as the handler gave it */
  fail(err) {
    this.failure ??= err;
  }

  /** Settles completed: the answer went out whole, or was abandoned. */
  settle() {
    if (this.sent && this.failure === undefined) return this.complete.resolve();
    this.complete.reject(this.failure ?? (this.signal.aborted ? this.signal.reason : new Error("the answer was not sent")));
  }

  /**
   * Aborts the handler's signal with an AbortError that says why.
   * @param {unknown} why an error, or a message
   * @param {boolean} byRelay whether the relay withdrew it (a watch, a 410), so it needs no word from us
   */
  withdraw(why, byRelay) {
    if (this.signal.aborted) return;
    this.byRelay = byRelay;
    if (why instanceof DOMException && why.name === "AbortError") return this.controller.abort(why);
    const message = why instanceof RelayError ? `the relay answered ${why.code}: ${why.message}` : String(why instanceof Error ? why.message : why);
    this.controller.abort(new DOMException(message, "AbortError"));
  }
}

/**
 * Keeps one watch open on the rids of the running jobs (POST
 * /api/v1/server/watch, at most 1000 rids a call): a rid it returns is
 * withdrawn. It starts again, 100 ms after a change (so a burst of
 * requests costs one restart, and a handler learns of its caller going
 * within a second), when a job it does not watch has come; jobs that end
 * stay watched until then, which costs nothing. A watch writes nothing,
 * so aborting it is always safe.
 * @param {Map<string, Job>} jobs
 * @returns {{changed(): void}}
 */
function watcher(server, net, wait, jobs, report, policy) {
  let current = null; // {controller, rids: Set<string>}
  let timer = null;
  let off = false; // a relay without watch: handlers learn at their next call

  const live = () => [...jobs.values()].filter((j) => !j.signal.aborted).map((j) => j.rid);
  function restart() {
    timer = null;
    const rids = live();
    if (current && rids.length > 0 && rids.every((r) => current.rids.has(r))) return;
    current?.controller.abort();
    current = null;
    if (rids.length === 0 || off) return;
    const w = { controller: new AbortController(), rids: new Set(rids) };
    current = w;
    for (let i = 0; i < rids.length; i += 1000) run(w, rids.slice(i, i + 1000));
  }

  async function run(w, rids) {
    const sig = w.controller.signal;
    for (let failures = 0; !sig.aborted; ) {
      let reply;
      try {
        reply = await server("/api/v1/server/watch", { net, rids, wait }, sig);
      } catch (err) {
        if (sig.aborted) return;
        if (err instanceof RelayError && (err.code === "no_route" || err.status === 405)) {
          off = true; // a relay without watch
          report(err);
          return;
        }
        if (!transient(err)) {
          report(err);
          if (current === w) current = null; // again at the next change
          return;
        }
        await sleep(policy.delay(Math.min(failures++, 60), err), sig).catch(() => {});
        continue;
      }
      failures = 0;
      // Cancelled ones are withdrawn; either way the next watch is of the
      // jobs that still run.
      for (const rid of reply.json?.cancelled ?? []) jobs.get(rid)?.withdraw("the caller withdrew the request, or it needs no more work", true);
      if (current === w) current = null;
      changed();
      return;
    }
  }

  function changed() {
    if (timer === null) timer = setTimeout(restart, 100);
  }
  return { changed };
}

/** The answer posted instead of one the relay refused as invalid (400 invalid_sim_res), in the relay's error shape. */
const invalidAnswer = Object.freeze({
  simStatus: 502,
  simHeaders: { "Content-Type": "application/json" },
  simBody: JSON.stringify({ error: { code: "invalid_response", message: "the SimServer's answer is not a valid HTTP response" } }),
});

/** The answer posted instead of one the relay refused as too large (413), in the relay's error shape. */
const tooLarge = Object.freeze({
  simStatus: 502,
  simHeaders: { "Content-Type": "application/json" },
  simBody: JSON.stringify({ error: { code: "response_too_large", message: "the SimServer's answer is larger than the relay accepts" } }),
});

/**
 * Calls the handler for a leased request. Returns a fixed sim_res (for a
 * request that maps to no Request, a handler that fails and an onError
 * that gives no Response instead), or the answer to send: status,
 * headers, the body's bytes that were at hand at once (at most PART_SIZE)
 * and its reader, which says whether it ended.
 * @param {(err: unknown) => unknown} tell onError, safe to call: what it returned
 * @param {Job} job
 * @returns {Promise<{simRes: SimResponse} | {status: number, headers: HeaderList, bytes: Uint8Array, body: PartReader}>}
 */
async function answer(handler, item, simReq, relayURL, tell, job) {
  const signal = job.signal;
  let request, target;
  try {
    // set replaces any value the caller sent: only the relay says who asked.
    ({ request, target } = handlerRequest(simReq, relayURL, [["C2cvia-From", item.from], ["C2cvia-Rid", item.rid]], signal));
  } catch (err) {
    tell(err);
    return { simRes: { simStatus: 400, simHeaders: { "Content-Type": "text/plain" }, simBody: "bad request" } };
  }
  // info.signal is request.signal, which follows the job's: a Request makes a signal of its own.
  /** @type {HandlerInfo} */
  const info = { remoteAddr: netAddr(item.remote_addr), from: item.from, rid: item.rid, target, signal: request.signal, completed: job.completed };
  try {
    return await opened(await handler(request, info), signal, "the fetch handler did not return a Response");
  } catch (err) {
    // A handler that gives up because its request was withdrawn (it threw
    // request.signal's reason) did as asked: not an error to report.
    if (signal.aborted && err === signal.reason) return internalError;
    try {
      // onError's Response, when it gives one, is the answer instead of the 500.
      const instead = await tell(err);
      if (instead instanceof Response) return await opened(instead, signal);
    } catch {
      // onError failed, or its Response's body did: the 500
    }
    return internalError;
  }
}

/** The answer of a handler that failed. */
const internalError = Object.freeze({ simRes: Object.freeze({ simStatus: 500, simHeaders: { "Content-Type": "text/plain" }, simBody: "internal server error" }) });

/**
 * A Response's status and headers with the body's bytes at hand at once
 * (at most PART_SIZE) and its reader. Throws a TypeError with notResponse
 * for anything that is no Response, and the body's error; the body is
 * cancelled when the signal aborts meanwhile or reading fails.
 * @param {unknown} res
 * @param {AbortSignal} signal
 * @param {string} [notResponse]
 */
async function opened(res, signal, notResponse = "onError returned no Response") {
  if (!(res instanceof Response)) throw new TypeError(notResponse);
  const body = new PartReader(res.body);
  const onAbort = () => body.cancel(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const bytes = await body.take(PART_SIZE, false);
    return { status: res.status, headers: responseHeaders(res), bytes, body };
  } catch (err) {
    body.cancel(err);
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * The Deno.NetAddr of a remote_addr "IP:port" ("[IPv6]:port"): hostname
 * without brackets, port a number. Both are undefined when the relay did
 * not tell (an older relay) or told something else.
 * @param {unknown} addr
 * @returns {NetAddr}
 */
function netAddr(addr) {
  const m = typeof addr === "string" ? /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(addr) : null;
  if (!m || Number(m[3]) > 65535) return { transport: "tcp", hostname: undefined, port: undefined };
  return { transport: "tcp", hostname: m[1] ?? m[2], port: Number(m[3]) };
}

/**
 * Reads a body stream in parts: what is at hand at once, up to a size,
 * keeping one read outstanding across calls so nothing is lost between
 * parts. "At hand" is what the stream gives before a macrotask passes:
 * chunks already queued, and those a Response of a string, bytes or a Blob
 * gives at once.
 */
class PartReader {
  /** @param {ReadableStream<Uint8Array> | null} stream */
  constructor(stream) {
    this.reader = stream?.getReader() ?? null;
    /** @type {Uint8Array | null} read, not yet taken */
    this.rest = null;
    /** @type {Promise<ReadableStreamReadResult<Uint8Array>> | null} */
    this.pending = null;
    /** whether the stream ended (or was cancelled) with everything before taken or in rest */
    this.ended = this.reader === null;
  }

  /** The outstanding read, started when there is none. */
  read() {
    this.pending ??= this.reader.read();
    return this.pending;
  }

  /** Whether the next read (a chunk, the end or an error) is at hand within a macrotask. */
  async ready() {
    if (this.rest !== null || this.ended) return true;
    const p = this.read();
    return Promise.race([p.then(() => true, () => true), macrotask().then(() => false)]);
  }

  /** Moves the next read's result into rest (or ended); throws the stream's error. */
  async next() {
    const r = await this.read();
    this.pending = null;
    if (r.done) {
      this.ended = true;
      return;
    }
    const v = r.value;
    if (v instanceof Uint8Array) this.rest = v;
    else if (ArrayBuffer.isView(v)) this.rest = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    else if (v instanceof ArrayBuffer) this.rest = new Uint8Array(v);
    else throw new TypeError("the response body gave a chunk that is no Uint8Array");
    if (this.rest.length === 0) this.rest = null;
  }

  /**
   * Up to max bytes: those at hand, after waiting for the first of them
   * (or the end) when wait. ended tells whether the stream ended right
   * after them, when that is at hand too.
   * @param {number} max
   * @param {boolean} wait
   * @returns {Promise<Uint8Array>}
   */
  async take(max, wait) {
    /** @type {Uint8Array[]} */
    const chunks = [];
    let size = 0;
    for (;;) {
      while (this.rest === null && !this.ended) {
        if (!(wait && size === 0) && !(await this.ready())) break;
        await this.next();
      }
      if (this.rest === null) break; // ended, or nothing at hand
      if (size >= max) {
        break;
      }
      const n = Math.min(this.rest.length, max - size);
      chunks.push(this.rest.subarray(0, n));
      size += n;
      this.rest = n < this.rest.length ? this.rest.subarray(n) : null;
    }
    if (chunks.length === 1) return chunks[0].slice();
    const out = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) out.set(c, at), (at += c.length);
    return out;
  }

  /** Stops reading: the stream's source is cancelled, and it counts as ended. */
  cancel(reason) {
    if (this.reader && !this.cancelled) {
      this.cancelled = true;
      this.reader.cancel(reason).catch(() => {});
    }
    this.rest = null;
    this.ended = true;
  }
}

/** Resolves after a macrotask: what a stream has queued comes before it. */
function macrotask() {
  if (typeof setImmediate === "function") return new Promise((r) => setImmediate(r));
  if (typeof MessageChannel === "function") {
    return new Promise((r) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => (ch.port1.close(), r());
      ch.port2.postMessage(null);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}

// ---------------------------------------------------------------------------
// Sessions: a SimClient login, its fetch and its peer messages.

/**
 * @typedef {object} Message
 * @property {number} id the cursor: pass it as `since` to resume after it
 * @property {"unicast" | "multicast" | "broadcast"} kind
 * @property {string} from the sender's peer_id
 * @property {string | null} topic the topic of a multicast, else null
 * @property {unknown} data any JSON value, as parseJSON reads it: a number no Number holds exactly is a BigInt or JSONNumber
 * @property {Date} sentAt
 */

/**
 * @typedef {object} Session
 * @property {string} token the secret of this login; it, peerId and expiresAt change when the session logs in again (see login)
 * @property {string} peerId its public id in the net
 * @property {string} net
 * @property {Date} expiresAt
 * @property {(input: RequestInfo | URL, init?: RequestInit) => Promise<Response>} fetch
 *   standard fetch through the relay to the net's SimServer: the URL's path and query (a string's exactly as
 *   written) and its host, as the Host header; a relative URL names the relay's host. Resolves once the
 *   answer's head is in; a streamed answer's body is read from the relay as the SimServer sends it (at most
 *   1 MiB a read), and errors with a RelayError 502 (code `aborted` or `cancelled`) when the answer ends
 *   early. init.signal aborting (an AbortError, before or while the body is read), or the body cancelled
 *   before its end, withdraws the request: the handler's request.signal aborts. Rejects with a RelayError
 *   for the relay's refusals (410 `expired`, `failed`, `cancelled`). Redirects (301, 302, 303, 307, 308) are
 *   followed as fetch follows them, 20 at most, unless init.redirect is "manual" (the 3xx Response as it came)
 *   or "error" (a TypeError); the body is held as bytes, so a 307 or 308 sends any body again. The Response's
 *   url is the last URL asked for and redirected tells whether a redirect was followed; a whole answer has
 *   Content-Length (but a 204, a 304 or a HEAD answer the SimServer gave none)
 * @property {(peerId: string, data: unknown) => Promise<{id: number}>} send
 *   data is any JSON value, written by stringifyJSON (a BigInt or JSONNumber keeps its digits); a TypeError
 *   for undefined, a function or a symbol
 * @property {(topic: string) => Promise<{topic: string, subscribed: boolean}>} subscribe
 * @property {(topic: string) => Promise<{topic: string, subscribed: boolean}>} unsubscribe
 * @property {(topic: string, data: unknown) => Promise<{id: number, receivers: number}>} publish
 * @property {(data: unknown) => Promise<{id: number, receivers: number}>} broadcast
 * @property {() => Promise<{peerId: string, lastSeen: Date}[]>} peers
 *   the logins of the net seen lately, this one too, most recent first (GET /api/v1/peer/peers)
 * @property {(options?: {since?: number}) => AsyncIterableIterator<Message>} messages
 *   incoming messages, oldest first. Without since, after the last message any iterator of this session gave
 *   out (a replay from an earlier since does not move that back), or from the oldest the relay kept; with
 *   since (a message id), after that message
 * @property {() => Promise<void>} close ends every open messages() iterator and in-flight call;
 *   the withdrawals of requests aborted or closed before then still go out, and the
 *   promise settles once they have (each tries for at most 10 s)
 */

/**
 * Logs in to net as a SimClient. The login call, and the session's own
 * calls, are tried again with backoff when refused for now (a network
 * error, 408, 429 or 5xx), retries + 1 times in all; pushreq, send,
 * publish and broadcast, which a repeat could do twice, only after a 429
 * or 503 (a fetch of GET, HEAD, OPTIONS or TRACE, or with an
 * Idempotency-Key, as after any failure: Go's net/http sends those again). A session.fetch waiting for its answer asks again up to retries
 * times in a row; a messages() iterator polls on for as long as it runs.
 *
 * A call that finds the token expired (401 `token_expired`, only that
 * code) logs in again to the same net, once for all the calls that found
 * it so, subscribes the new login to the topics this session subscribed
 * to, and is made once more: token, peerId and expiresAt change, and an
 * open messages() iterator reads on with the new token after its last
 * message. A new login is a new peer: what was meant for the old one does
 * not carry over. Unicasts sent to the old peerId, and multicasts
 * published before the new login subscribed, are not received; a
 * session.fetch whose request was pushed under the old token cannot read
 * its answer and rejects (the relay refuses the new token for that rid).
 *
 * @param {object} options
 * @param {string} [options.relay] the relay's URL; in a browser, location.origin by default
 * @param {string} options.net
 * @param {number} [options.retries] further tries of a call refused for now; 9
 * @param {{initial?: number, max?: number}} [options.backoff] ms before the first retry (doubling, with jitter) and at most; 250 and 30000
 * @returns {Promise<Session>}
 */
export async function login({ relay, net, retries, backoff } = /** @type {any} */ ({})) {
  const base = relayBase(relay);
  if (typeof net !== "string") throw new TypeError("login: net must be a string");
  const policy = retryPolicy("login", retries, backoff);
  const closing = new AbortController();
  const enter = async () => (await withRetries(policy, closing.signal, () => relayCall(base, "/api/v1/client/login", { net }, undefined, closing.signal))).json;
  const first = await enter();
  /** @type {Set<string>} the topics subscribed, for a new login */
  const topics = new Set();
  /** the highest id a messages() iterator of this session has given out, for the next one */
  const cursor = { id: /** @type {number | undefined} */ (undefined) };
  /** @type {Promise<void> | null} the new login under way */
  let renewing = null;
  /** @type {Set<() => void>} the open messages() iterators' reconnect */
  const renewed = new Set();

  /** Logs in again, once for all the calls that found stale expired. */
  function renew(stale) {
    if (session.token !== stale) return Promise.resolve(); // done by another call already
    renewing ??= (async () => {
      const j = await enter();
      session.token = j.token;
      session.peerId = j.peer_id;
      session.expiresAt = new Date(j.expires_at);
      for (const topic of topics) {
        await withRetries(policy, closing.signal, () => relayCall(base, "/api/v1/peer/subscribe", { topic }, j.token, closing.signal));
      }
      for (const reconnect of renewed) reconnect();
    })().finally(() => (renewing = null));
    return renewing;
  }

  /**
   * One call with the session's token; an expired token is renewed and
   * the call made once more. how: "retry" (tried again when refused for
   * now), "once" (only after 429 or 503), "poll" (not at all: the caller
   * loops).
   */
  async function call(path, body, sig, how = "poll", method = "POST") {
    const s = anySignal(closing.signal, sig);
    const policyFor = how === "poll" ? { ...policy, retries: 0 } : policy;
    let used;
    const attempt = () => withRetries(policyFor, s, () => relayRequest(base, method, path, body, (used = session.token), s), how === "once");
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof RelayError && err.status === 401 && err.code === "token_expired")) throw err;
      await renew(used);
      return attempt();
    }
  }
  // Withdrawals outlive close(): a fetch aborted just before it must still
  // tell the relay, so they have a signal of their own, and close() waits.
  const pending = new Set();
  const cancel = (rid) => {
    const token = session.token;
    const uncloseable = (path, body) => relayCall(base, path, body, token, AbortSignal.timeout(10_000));
    const p = cancelRequest(uncloseable, rid, policy).finally(() => pending.delete(p));
    pending.add(p);
    return p;
  };

  /** @type {Session} */
  const session = {
    token: first.token,
    peerId: first.peer_id,
    net: first.net,
    expiresAt: new Date(first.expires_at),
    fetch: (input, init) => clientFetch(base, call, cancel, closing.signal, policy, input, init),
    send: async (peerId, data) => (await call("/api/v1/peer/send", { to: peerId, data: jsonData("send", data) }, undefined, "once")).json,
    subscribe: async (topic) => {
      const { json } = await call("/api/v1/peer/subscribe", { topic }, undefined, "retry");
      topics.add(topic);
      return json;
    },
    unsubscribe: async (topic) => {
      const { json } = await call("/api/v1/peer/unsubscribe", { topic }, undefined, "retry");
      topics.delete(topic);
      return json;
    },
    publish: async (topic, data) => (await call("/api/v1/peer/publish", { topic, data: jsonData("publish", data) }, undefined, "once")).json,
    broadcast: async (data) => (await call("/api/v1/peer/broadcast", { data: jsonData("broadcast", data) }, undefined, "once")).json,
    peers: async () => {
      const { json } = await call("/api/v1/peer/peers", undefined, undefined, "retry", "GET");
      return json.peers.map((p) => ({ peerId: p.peer_id, lastSeen: new Date(p.last_seen) }));
    },
    messages: ({ since } = {}) => {
      if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) throw new TypeError(`messages: since must be a message id (an integer of 0 or more), not ${since}`);
      return new MessageIterator(base, () => session.token, call, closing.signal, policy, cursor, since, renewed);
    },
    close: async () => {
      closing.abort();
      await Promise.allSettled([...pending]);
    },
  };
  return session;
}

/** data as given, after a check that it is some JSON value: undefined (or a function) would reach the relay as no data at all. */
function jsonData(who, data) {
  if (stringifyJSON(data) === undefined) throw new TypeError(`${who}: data must be a JSON value, not ${typeof data}`);
  return data;
}

/**
 * session.fetch: each request of the exchange by exchange(), following
 * redirects as fetch does (redirect "follow", the default): 301 and 302
 * turn a POST into a GET, 303 turns any method but GET and HEAD into a GET,
 * both without a body and its headers; 307 and 308 keep method and body,
 * which is held as bytes, so any body can be sent again. Authorization is
 * dropped when the origin changes. More than 20 redirects, a Location that
 * is no http(s) URL, or any redirect under redirect "error" rejects with
 * a TypeError; "manual" returns the 3xx Response as it came. The Response's
 * url is the last URL asked for, its redirected whether one was followed.
 */
async function clientFetch(base, call, cancel, closed, policy, input, init = {}) {
  let url = input instanceof Request ? new URL(input.url) : new URL(String(input), base + "/");
  // A string keeps its path as given: the URL parser would remove dot segments.
  const target = input instanceof Request || input instanceof URL ? undefined : rawTarget(String(input));
  const req = new Request(input instanceof Request ? input : url, init);
  const sig = init.signal ?? (input instanceof Request ? input.signal : undefined);
  const mode = req.redirect;
  let message = await requestMessage(req, target);
  let method = req.method;
  const headers = new Headers(req.headers);
  for (let redirects = 0; ; redirects++) {
    const res = await exchange(call, cancel, closed, policy, message, sig);
    const location = res.headers.get("location");
    if (!REDIRECTS.has(res.status) || mode === "manual") return finalResponse(res, url, redirects > 0);
    if (mode === "error") {
      // As fetch: any redirect status fails, with or without Location.
      await res.body?.cancel().catch(() => {});
      throw new TypeError(`fetch: ${url.href} answered ${res.status}, a redirect, and redirect is "error"`);
    }
    if (location === null) return finalResponse(res, url, redirects > 0);
    let next;
    try {
      if (redirects >= 20) throw new TypeError(`fetch: more than 20 redirects, the last to ${location}`);
      next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") throw new TypeError(`fetch: a redirect to ${next.protocol} URL ${location}`);
    } catch (err) {
      await res.body?.cancel().catch(() => {});
      throw err instanceof TypeError ? err : new TypeError(`fetch: the redirect's Location ${JSON.stringify(location)} is no URL`);
    }
    await res.body?.cancel().catch(() => {}); // a streamed one is withdrawn
    let body = message.body;
    if (((res.status === 301 || res.status === 302) && method === "POST") || (res.status === 303 && method !== "GET" && method !== "HEAD")) {
      method = "GET";
      body = null;
      for (const name of ["Content-Encoding", "Content-Language", "Content-Location", "Content-Type"]) headers.delete(name);
    }
    if (next.origin !== url.origin) headers.delete("Authorization");
    url = next;
    message = await requestMessage(new Request(url, { method, headers, body }), rawTarget(location));
  }
}

/** The statuses fetch follows. */
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** res with url (without its fragment) and redirected set, as fetch gives them; a Response built by hand cannot set them. */
function finalResponse(res, url, redirected) {
  const u = new URL(url);
  u.hash = "";
  Object.defineProperty(res, "url", { value: u.href, enumerable: true });
  Object.defineProperty(res, "redirected", { value: redirected, enumerable: true });
  return res;
}

/**
 * One request and its answer: pushreq, then pullsmart until the answer
 * comes; a streamed answer's body reads on from the relay. The caller's
 * signal aborting, or its body cancelled before its end, withdraws the
 * request (cancel).
 * @param {HTTPMessage} message
 * @returns {Promise<Response>}
 */
async function exchange(call, cancel, closed, policy, message, sig) {
  // Sent again after a network error only when a browser or Go's
  // net/http would send it again: a repeat of it may do nothing twice.
  const how = resendable(message) ? "retry" : "once";
  const { json } = await call("/api/v1/client/pushreq", { sim_req: toSimReq(message) }, sig, how);
  const rid = json.rid;
  const withdraw = () => cancel(rid);

  for (let failures = 0; ; ) {
    let reply;
    try {
      reply = await call("/api/v1/client/pullsmart", { rid, wait: 25 }, sig);
    } catch (err) {
      if (sig?.aborted || closed.aborted) {
        withdraw();
        throw err;
      }
      // The request is stored: a lost poll is asked again, not failed.
      if (!transient(err) || failures >= policy.retries) throw err;
      await sleep(policy.delay(failures++, err), sig).catch((e) => {
        withdraw();
        throw e;
      });
      continue;
    }
    failures = 0;
    if (reply.status !== 200) continue;
    // The sim_res goes on as raw text, so a JSON body keeps every digit.
    const raw = rawField(reply.text, "sim_res") ?? "{}";
    if (typeof reply.json.stream !== "string") return callerResponse(raw, message.method);
    try {
      return streamedResponse(call, rid, raw, reply.json, message.method, sig, closed, withdraw, policy);
    } catch (err) {
      withdraw();
      throw err;
    }
  }
}

/** Withdraws rid (POST /api/v1/client/cancel), trying 3 times at most; a failure is let go: the request then lives out its time. */
async function cancelRequest(call, rid, policy) {
  for (let attempt = 0; ; attempt++) {
    try {
      await call("/api/v1/client/cancel", { rid });
      return;
    } catch (err) {
      if (!transient(err) || attempt >= Math.min(2, policy.retries)) return; // 409 complete, 410 gone: nothing to withdraw
      await sleep(policy.delay(attempt, err)).catch(() => {});
    }
  }
}

/**
 * The Response of a streamed answer: the head's status and headers, and a
 * body that reads the answer's bytes from the relay as they come
 * (pullsmart with offset, long-polling while the stream is open). An answer
 * that ends early (aborted, cancelled) errors the body with a RelayError
 * 502 of that code; sig aborting errors it with sig's reason.
 * @param {string} raw the head's sim_res as raw JSON text
 * @param {{offset?: number, stream: string}} reply the first pullsmart's reply
 * @param {AbortSignal} closed the session's: closing it mid-read withdraws the request too
 * @param {() => void} withdraw cancels the request
 * @returns {Response}
 */
function streamedResponse(call, rid, raw, reply, method, sig, closed, withdraw, policy) {
  const { status, headers, first } = streamHead(raw, method);
  let offset = typeof reply.offset === "number" ? reply.offset : first.length;
  if (bodyless(method, status)) {
    if (reply.stream === "open") withdraw(); // nobody will read the rest
    return new Response(null, { status, headers });
  }
  const local = new AbortController(); // ends the body's reads
  const reads = anySignal(sig, local.signal);
  let finished = false;
  /** @type {ReadableStreamDefaultController<Uint8Array>} */
  let ctrl;
  const finish = () => {
    finished = true;
    sig?.removeEventListener("abort", onAbort);
  };
  function onAbort() {
    if (finished) return;
    finish();
    local.abort();
    withdraw();
    ctrl.error(sig?.reason);
  }
  const body = new ReadableStream({
    start(c) {
      ctrl = c;
      if (first.length) c.enqueue(first);
      sig?.addEventListener("abort", onAbort, { once: true });
      if (sig?.aborted) onAbort();
    },
    async pull(c) {
      for (let failures = 0; !finished; ) {
        let r;
        try {
          r = await call("/api/v1/client/pullsmart", { rid, offset, wait: 25 }, reads);
        } catch (err) {
          if (finished) return; // cancelled or aborted meanwhile
          if (closed.aborted) {
            finish();
            withdraw(); // the session closed under its reader: nobody will read the rest
            throw err;
          }
          if (transient(err) && failures < policy.retries) {
            await sleep(policy.delay(failures++, err), reads).catch(() => {});
            continue;
          }
          finish();
          throw err;
        }
        if (finished) return;
        failures = 0;
        if (r.status !== 200) continue;
        const part = streamPart(rawField(r.text, "sim_res") ?? "{}");
        offset = typeof r.json.offset === "number" ? r.json.offset : offset + part.length;
        if (part.length) {
          c.enqueue(part);
          return;
        }
        const state = r.json.stream;
        if (state === "open") continue; // the wait ran out
        finish();
        if (state === "complete") return c.close();
        throw new RelayError(502, String(state), `the streamed answer ended before its last part (${state})`);
      }
    },
    cancel() {
      if (finished) return;
      finish();
      local.abort();
      withdraw();
    },
  });
  return new Response(body, { status, headers });
}

/** The status, headers and first body bytes of a streamed answer's head; throws a RelayError 502 for one no Response can hold. */
function streamHead(raw, method) {
  let m;
  try {
    m = fromSimRes(raw, method, true);
  } catch (err) {
    throw new RelayError(502, "bad_gateway", `the SimServer's answer maps to no response: ${err instanceof Error ? err.message : err}`);
  }
  if (m.status < 200 || m.status > 599) {
    throw new RelayError(502, "bad_gateway", `the SimServer answered ${m.status}, which is not a final HTTP status`);
  }
  return { status: m.status, headers: platformHeaders(m.headers), first: m.body ?? new Uint8Array(0) };
}

/** The body bytes a pullsmart reply on a stream carries: simBody, a string or base64. */
function streamPart(raw) {
  const obj = JSON.parse(raw);
  return bodyFromSim(rawField(raw, "simBody"), obj.simBodyEncoding, []).bytes ?? new Uint8Array(0);
}

/**
 * The messages of a session, oldest first: long-polls pullsmart, or reads
 * the event stream where EventSource exists. Resumes after the last message
 * it received across reconnects; return() (a `break` out of for-await)
 * releases the connection at once.
 * @implements {AsyncIterableIterator<Message>}
 */
class MessageIterator {
  /**
   * @param {() => string} token the session's token now
   * @param {RetryPolicy} policy
   * @param {{id: number | undefined}} cursor the session's: the last message any of its iterators gave out
   * @param {number | undefined} since
   * @param {Set<() => void>} renewed what to call when the session has logged in again
   */
  constructor(base, token, call, closing, policy, cursor, since, renewed) {
    this.renewed = renewed;
    this.onRenew = () => this.reconnect();
    renewed.add(this.onRenew);
    /** @type {AbortController | null} the poll under way */
    this.poll = null;
    this.base = base;
    this.token = token;
    this.call = call;
    this.policy = policy;
    this.cursor = cursor;
    this.stop = new AbortController();
    this.signal = anySignal(closing, this.stop.signal);
    this.signal.addEventListener("abort", () => this.finish());
    /** @type {number | undefined} the cursor: after the last message received */
    this.since = since ?? cursor.id;
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
      if (this.buffer.length > 0) {
        const m = /** @type {Message} */ (this.buffer.shift());
        // Only forward: a replay from an earlier since does not move it back.
        if (this.cursor.id === undefined || m.id > this.cursor.id) this.cursor.id = m.id;
        return { value: m, done: false };
      }
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
          this.cursor.id = undefined;
          continue;
        }
        if (!transient(err)) {
          this.error = err;
          continue;
        }
        await sleep(this.policy.delay(Math.min(failures++, 60), err), this.signal).catch(() => {});
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
    const poll = (this.poll = new AbortController());
    let reply;
    try {
      reply = await this.call("/api/v1/peer/pullsmart", body, anySignal(this.signal, poll.signal));
    } catch (err) {
      if (poll.signal.aborted && !this.signal.aborted) return; // reconnect(): again, with the new token
      throw err;
    }
    const { text, json } = reply;
    this.buffer.push(...rawElements(rawField(text, "messages") ?? "[]").map(toMessage));
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
    url.searchParams.set("token", this.token());
    if (this.since !== undefined) url.searchParams.set("since", String(this.since));
    const source = new globalThis.EventSource(url.toString());
    this.source = source;
    const kick = () => this.kick();
    source.onmessage = (ev) => {
      if (this.source !== source) return;
      const m = toMessage(ev.data);
      this.since = m.id;
      this.buffer.push(m);
      kick();
    };
    source.onerror = () => {
      if (this.source === source && source.readyState === 2) kick(); // else it reconnects by itself
    };
  }

  /** Wakes a next() that waits for the event stream. */
  kick() {
    const w = this.wake;
    this.wake = signal();
    w.resolve();
  }

  /** After the session logged in again: the poll or stream of the old token ends, and the next one uses the new. */
  reconnect() {
    if (this.source) {
      this.source.close();
      this.source = null;
      this.kick();
    }
    this.poll?.abort();
  }

  finish() {
    this.renewed.delete(this.onRenew);
    this.done = true;
    this.source?.close();
    this.source = null;
    this.buffer.length = 0;
    this.wake.resolve();
  }
}

/**
 * The Message of a message's raw JSON text: data parsed by parseJSON, so
 * its numbers keep every digit.
 * @param {string} raw
 * @returns {Message}
 */
function toMessage(raw) {
  const m = JSON.parse(raw);
  const data = rawField(raw, "data");
  return { id: m.id, kind: m.kind, from: m.from, topic: m.topic ?? null, data: data === undefined ? null : parseJSON(data), sentAt: new Date(m.sent_at) };
}

// ---------------------------------------------------------------------------
// JSON that keeps every digit. JSON.parse rounds 12345678901234567890 to
// 12345678901234567000 and JSON.stringify throws on a BigInt: messages'
// data go through these instead, both ways.

/**
 * A JSON number that no JavaScript number holds exactly: a non-integer
 * literal whose digits a double does not reproduce
 * ("3.141592653589793238462643383279", "1e400"). text is the literal as
 * written; it is written back as such by stringifyJSON. valueOf() gives the
 * nearest Number, so arithmetic and comparison work (approximately);
 * JSON.stringify writes that Number.
 */
export class JSONNumber {
  /** @param {string} text a JSON number literal */
  constructor(text) {
    if (typeof text !== "string" || !NUMBER.test(text)) throw new TypeError(`JSONNumber: ${JSON.stringify(String(text))} is not a JSON number`);
    /** @type {string} */
    this.text = text;
    Object.freeze(this);
  }

  /** @returns {number} the nearest double */
  valueOf() {
    return Number(this.text);
  }

  /** @returns {string} the literal */
  toString() {
    return this.text;
  }

  /** @returns {number} what JSON.stringify writes: the nearest double */
  toJSON() {
    return Number(this.text);
  }
}

/** A whole JSON number literal. */
const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
/** A JSON number literal at lastIndex. */
const NUMBER_AT = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * JSON.parse that keeps every digit: an integer literal (no fraction, no
 * exponent) outside ±(2^53 − 1) is a BigInt; a non-integer literal whose
 * digits the nearest double does not give back is a JSONNumber; every other
 * number is a Number. Anything else is as JSON.parse gives it; a text that
 * is not JSON throws a SyntaxError.
 * @param {string} text
 * @returns {unknown}
 */
export function parseJSON(text) {
  if (typeof text !== "string") throw new TypeError(`parseJSON: the text must be a string, not ${typeof text}`);
  const p = { text, i: 0 };
  const value = parseValue(p);
  p.i = skipSpace(text, p.i);
  if (p.i < text.length) throw jsonError(p, "unexpected text after the value");
  return value;
}

/** The value at p.i, p.i moved past it. */
function parseValue(p) {
  const { text } = p;
  p.i = skipSpace(text, p.i);
  const c = text[p.i];
  if (c === "{") {
    /** @type {Record<string, unknown>} */
    const obj = {};
    p.i = skipSpace(text, p.i + 1);
    if (text[p.i] === "}") return p.i++, obj;
    for (;;) {
      p.i = skipSpace(text, p.i);
      if (text[p.i] !== '"') throw jsonError(p, "expected a string key");
      const key = parseString(p);
      p.i = skipSpace(text, p.i);
      if (text[p.i] !== ":") throw jsonError(p, "expected ':'");
      p.i++;
      // As JSON.parse: "__proto__" is a key like any other, not the prototype.
      Object.defineProperty(obj, key, { value: parseValue(p), writable: true, enumerable: true, configurable: true });
      p.i = skipSpace(text, p.i);
      if (text[p.i] === ",") p.i++;
      else if (text[p.i] === "}") return p.i++, obj;
      else throw jsonError(p, "expected ',' or '}'");
    }
  }
  if (c === "[") {
    const arr = [];
    p.i = skipSpace(text, p.i + 1);
    if (text[p.i] === "]") return p.i++, arr;
    for (;;) {
      arr.push(parseValue(p));
      p.i = skipSpace(text, p.i);
      if (text[p.i] === ",") p.i++;
      else if (text[p.i] === "]") return p.i++, arr;
      else throw jsonError(p, "expected ',' or ']'");
    }
  }
  if (c === '"') return parseString(p);
  for (const [word, value] of [["true", true], ["false", false], ["null", null]]) {
    if (text.startsWith(word, p.i)) return (p.i += word.length), value;
  }
  NUMBER_AT.lastIndex = p.i;
  const m = NUMBER_AT.exec(text);
  if (!m) throw jsonError(p, c === undefined ? "unexpected end" : `unexpected ${JSON.stringify(c)}`);
  p.i += m[0].length;
  return numberOf(m[0]);
}

/** The string at p.i (a '"'), p.i moved past it; JSON.parse checks its escapes. */
function parseString(p) {
  const { text } = p;
  let i = p.i + 1;
  while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
  if (i >= text.length) throw jsonError(p, "unterminated string");
  const s = JSON.parse(text.slice(p.i, i + 1));
  p.i = i + 1;
  return s;
}

function jsonError(p, what) {
  return new SyntaxError(`parseJSON: ${what} at position ${p.i}`);
}

/** The value of a JSON number literal: a Number when it holds it exactly, else a BigInt or JSONNumber. */
function numberOf(literal) {
  const n = Number(literal);
  if (!/[.eE]/.test(literal)) return Number.isSafeInteger(n) ? n : BigInt(literal);
  return Number.isFinite(n) && digitsOf(literal) === digitsOf(String(n)) ? n : new JSONNumber(literal);
}

/** A number literal's sign, significant digits and exponent, "-15e1" for "-1.50": the same for literals of the same value. */
function digitsOf(literal) {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!m) return literal;
  const all = m[2] + (m[3] ?? "");
  const lead = all.length - all.replace(/^0+/, "").length;
  const digits = all.slice(lead).replace(/0+$/, "");
  if (digits === "") return "0"; // -0 and 0 alike: a Number writes both as 0
  return `${m[1]}${digits}e${BigInt(m[4] ?? 0) + BigInt(m[2].length - lead)}`;
}

/**
 * JSON.stringify (without replacer or indentation) that writes a BigInt and
 * a JSONNumber as their digits, where JSON.stringify throws on a BigInt.
 * Everything else is written as JSON.stringify writes it (toJSON, undefined
 * left out of objects, null in arrays, NaN and Infinity as null); a cycle
 * throws a TypeError.
 * @param {unknown} value
 * @returns {string | undefined} undefined for undefined, a function or a symbol, as JSON.stringify
 */
export function stringifyJSON(value) {
  return writeValue({ "": value }, "", value, []);
}

/** The JSON text of value, holder[key]; undefined for none. */
function writeValue(holder, key, value, stack) {
  if (value instanceof JSONNumber) return value.text;
  if (typeof value === "bigint") return value.toString();
  if (value !== null && typeof value === "object" && typeof value.toJSON === "function") value = value.toJSON(key);
  if (value instanceof JSONNumber) return value.text;
  if (value instanceof Number || value instanceof String || value instanceof Boolean || value instanceof BigInt) value = value.valueOf();
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "string":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (stack.includes(value)) throw new TypeError("stringifyJSON: the value has a cycle");
      stack.push(value);
      let out;
      if (Array.isArray(value)) {
        out = "[" + value.map((v, i) => writeValue(value, String(i), v, stack) ?? "null").join(",") + "]";
      } else {
        const parts = [];
        for (const k of Object.keys(value)) {
          const v = writeValue(value, k, value[k], stack);
          if (v !== undefined) parts.push(JSON.stringify(k) + ":" + v);
        }
        out = "{" + parts.join(",") + "}";
      }
      stack.pop();
      return out;
    }
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------
// Talking to the relay.

/**
 * POSTs a JSON body to the relay with a Bearer secret and returns the
 * reply; any status of 300 or more rejects with a RelayError. The body is
 * written by stringifyJSON: BigInt and JSONNumber data keep their digits.
 * @returns {Promise<{status: number, text: string, json: any}>}
 */
function relayCall(base, path, body, secret, sig) {
  return relayPost(base + path, "application/json", stringifyJSON(body), secret, sig);
}

/** relayCall, or for GET the same without a body. */
function relayRequest(base, method, path, body, secret, sig) {
  if (method === "POST") return relayCall(base, path, body, secret, sig);
  return relayPost(base + path, undefined, undefined, secret, sig, method);
}

/**
 * POSTs bytes to the relay as an application/octet-stream body, the other
 * parameters in the query string (pushpart), as relayCall does.
 * @param {Record<string, string | number | boolean>} query
 * @param {Uint8Array} bytes
 */
function relayPart(base, path, query, bytes, secret, sig) {
  const url = new URL(base + path);
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value));
  return relayPost(url.toString(), "application/octet-stream", bytes, secret, sig);
}

/** POSTs body of type to url with a Bearer secret (or makes another method's call without one); a status of 300 or more rejects with a RelayError. */
async function relayPost(url, type, body, secret, sig, method = "POST") {
  /** @type {Record<string, string>} */
  const headers = {};
  if (type) headers["Content-Type"] = type;
  if (secret) headers.Authorization = "Bearer " + secret;
  const res = await globalThis.fetch(url, { method, headers, body, signal: sig });
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
 * The SDK's defaults, in the units of the options that take them: retries
 * (further tries of a call refused for now), backoffInitial and backoffMax
 * (ms), concurrency (handlers at once), lease and wait (s), linger (ms).
 */
export const defaults = Object.freeze({ retries: 9, backoffInitial: 250, backoffMax: 30_000, concurrency: 4, lease: 30, wait: 25, linger: 2 });

/**
 * The delay in ms before retry number retry (0-based): initial doubling up
 * to max, with jitter (half to all of it), and at least retryAfter seconds
 * when the relay sent Retry-After.
 * @param {number} retry
 * @param {{initial?: number, max?: number, retryAfter?: number}} [options] initial and max in ms (250, 30000), retryAfter in s
 * @returns {number}
 */
export function backoffDelay(retry, { initial = defaults.backoffInitial, max = defaults.backoffMax, retryAfter } = {}) {
  if (!Number.isInteger(retry) || retry < 0) throw new TypeError(`backoffDelay: retry must be an integer of 0 or more, not ${retry}`);
  const ceiling = Math.min(max, initial * 2 ** Math.min(retry, 60));
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  return Math.max(delay, retryAfter > 0 ? retryAfter * 1000 : 0);
}

/**
 * The retry policy of login() or serve(): how many further tries a call
 * refused for now gets, and the delay before each. Throws a TypeError for
 * options out of range.
 * @param {string} who the function, for the error
 * @param {number | undefined} retries
 * @param {{initial?: number, max?: number} | undefined} backoff
 * @returns {RetryPolicy}
 */
function retryPolicy(who, retries = defaults.retries, backoff = {}) {
  if (!Number.isInteger(retries) || retries < 0) throw new TypeError(`${who}: retries must be an integer of 0 or more, not ${retries}`);
  if (backoff === null || typeof backoff !== "object") throw new TypeError(`${who}: backoff must be an object {initial, max} in ms`);
  const { initial = defaults.backoffInitial, max = defaults.backoffMax } = backoff;
  if (!(typeof initial === "number" && initial > 0 && Number.isFinite(initial))) throw new TypeError(`${who}: backoff.initial must be a positive number of ms, not ${initial}`);
  if (!(typeof max === "number" && max >= initial && Number.isFinite(max))) throw new TypeError(`${who}: backoff.max must be a number of ms no smaller than backoff.initial, not ${max}`);
  return {
    retries,
    delay: (n, err) => backoffDelay(n, { initial, max, retryAfter: err instanceof RelayError ? err.retryAfter : undefined }),
  };
}

/**
 * Whether a request may be sent again after a network error hid whether
 * it arrived, by the rule of Go's net/http (Transport): GET, HEAD, OPTIONS
 * and TRACE, and any request that carries an Idempotency-Key (or
 * X-Idempotency-Key) header; RFC 9110, 9.2.2.
 * @param {HTTPMessage} message
 * @returns {boolean}
 */
function resendable(message) {
  const method = (message.method ?? "GET").toUpperCase();
  if (method === "GET" || method === "HEAD" || method === "OPTIONS" || method === "TRACE") return true;
  return message.headers.some(([name]) => /^(x-)?idempotency-key$/i.test(name));
}

/**
 * @typedef {object} RetryPolicy
 * @property {number} retries further tries of a call refused for now
 * @property {(n: number, err: unknown) => number} delay ms before retry n (0-based), at least the err's Retry-After
 */

/**
 * Runs call until it succeeds, fails for good, or has been tried
 * policy.retries + 1 times, backing off between tries. once marks a call
 * that a repeat could do twice (pushreq, send, publish, broadcast): it is
 * tried again only after a 429 or 503, whose reply says nothing was done,
 * never after a network error, which may have hidden a success.
 * @template T
 * @param {RetryPolicy} policy
 * @param {AbortSignal | undefined} sig
 * @param {() => Promise<T>} call
 * @param {boolean} [once] false
 * @returns {Promise<T>}
 */
async function withRetries(policy, sig, call, once = false) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const again = once ? err instanceof RelayError && (err.status === 429 || err.status === 503) : transient(err);
      if (!again || attempt >= policy.retries || sig?.aborted) throw err;
      await sleep(policy.delay(attempt, err), sig);
    }
  }
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
// HTTP ⇄ sim mapping: the rules of the Go package internal/simhttp (docs/API.md,
// "Gateway"), which the golden cases in testdata/mapping hold both to.
//
// An HTTP message here is {method?, target?, status?, headers, body}: headers
// a list of [name, value] pairs in order, each value a ByteString (one code
// point per byte, as Headers hold them), and body the exact bytes or null.
// The core functions map such messages; thin adapters turn Request and
// Response objects into them and back, since a Headers object joins repeated
// values and a Request parses its URL.

/**
 * @typedef {[name: string, value: string][]} HeaderList
 * @typedef {object} HTTPMessage
 * @property {string} [method] a request's
 * @property {string} [target] a request's path and query, exactly as sent
 * @property {number} [status] a response's
 * @property {HeaderList} headers
 * @property {Uint8Array | null} body the exact bytes; null for none
 * @typedef {Record<string, string | string[]>} SimValues
 * @typedef {object} SimRequest
 * @property {string} simMethod
 * @property {string} simEndpoint the path exactly as sent
 * @property {string} simQuery the raw query, without "?"
 * @property {SimValues} simQueryParams
 * @property {object} simRouteParams
 * @property {SimValues} simHeaders
 * @property {Record<string, "latin1">} [simHeadersEncoding]
 * @property {string | null} simBody
 * @property {"base64"} [simBodyEncoding]
 * @typedef {object} SimResponse
 * @property {number} simStatus
 * @property {SimValues} simHeaders
 * @property {Record<string, "latin1">} [simHeadersEncoding]
 * @property {string | null} simBody
 * @property {"base64"} [simBodyEncoding]
 */

/** The headers of one connection, never forwarded (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set(["Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"]);

/**
 * A header name in Go's canonical form (http.CanonicalHeaderKey): the first
 * letter and each after "-" upper case, the rest lower case. A name with a
 * character outside the token set is left as it is.
 */
function canonicalName(name) {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]*$/.test(name)) return name;
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_, dash, c) => dash + c.toUpperCase());
}

/** The canonical names that the Connection values in headers list. */
function connectionNames(headers) {
  const named = new Set();
  for (const [name, value] of headers) {
    if (canonicalName(name) !== "Connection") continue;
    for (const f of value.split(",")) named.add(canonicalName(f.trim()));
  }
  return named;
}

/** The end-to-end pairs of headers: hop-by-hop ones and those Connection names dropped, names canonical. */
function endToEnd(headers) {
  const named = connectionNames(headers);
  /** @type {HeaderList} */
  const out = [];
  for (const [name, value] of headers) {
    const key = canonicalName(name);
    if (!HOP_BY_HOP.has(key) && !named.has(key)) out.push([key, value]);
  }
  return out;
}

/** The header value of name in headers (the first), or undefined. */
function headerValue(headers, name) {
  return headers.find(([n]) => canonicalName(n) === name)?.[1];
}

/**
 * simHeaders and simHeadersEncoding of header pairs: a name whose values
 * are not all UTF-8 bytes travels one code point per byte, marked latin1.
 * @returns {{simHeaders: SimValues, simHeadersEncoding?: Record<string, "latin1">}}
 */
function headersToSim(headers) {
  /** @type {Map<string, string[]>} */
  const byName = new Map();
  for (const [name, value] of endToEnd(headers)) {
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name).push(value);
  }
  /** @type {SimValues} */
  const simHeaders = {};
  /** @type {Record<string, "latin1">} */
  const encoding = {};
  for (const [name, values] of byName) {
    const texts = values.map(byteStringText);
    const latin1 = texts.includes(undefined);
    if (latin1) encoding[name] = "latin1";
    const out = latin1 ? values : /** @type {string[]} */ (texts);
    simHeaders[name] = out.length === 1 ? out[0] : out;
  }
  return Object.keys(encoding).length ? { simHeaders, simHeadersEncoding: encoding } : { simHeaders };
}

/**
 * Header pairs of simHeaders (raw JSON text) and simHeadersEncoding: a
 * latin1 value is its bytes already; any other is encoded as UTF-8.
 * Hop-by-hop headers are left out. Throws on an encoding other than latin1
 * or a latin1 value with a character above U+00FF.
 * @returns {HeaderList}
 */
function headersFromSim(rawHeaders, encoding) {
  const latin1 = new Set();
  for (const [name, e] of Object.entries(encoding ?? {})) {
    if (e !== "latin1") throw new TypeError(`simHeadersEncoding[${JSON.stringify(name)}] must be "latin1"`);
    latin1.add(canonicalName(name));
  }
  /** @type {HeaderList} */
  const pairs = [];
  for (const [name, values] of rawValues(rawHeaders)) {
    const key = canonicalName(name);
    for (const v of values) {
      if (latin1.has(key) && /[^\x00-\xff]/.test(v)) {
        throw new TypeError(`simHeaders[${JSON.stringify(name)}] is marked latin1 but has a character above U+00FF`);
      }
      pairs.push([key, latin1.has(key) ? v : byteString(utf8Encoder.encode(v))]);
    }
  }
  return endToEnd(pairs);
}

/** The UTF-8 text of a ByteString's bytes, or undefined when they are not UTF-8. A string that is no ByteString is text already. */
function byteStringText(value) {
  if (/[^\x00-\xff]/.test(value)) return value;
  if (!/[\x80-\xff]/.test(value)) return value;
  return utf8(Uint8Array.from(value, (c) => c.charCodeAt(0)));
}

/** The ByteString of bytes: one code point per byte. */
function byteString(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return s;
}

/**
 * simBody and simBodyEncoding of the exact bytes: null for none, a string
 * when they are UTF-8, else base64.
 * @param {Uint8Array | null} bytes
 * @returns {{simBody: string | null, simBodyEncoding?: "base64"}}
 */
function bodyToSim(bytes) {
  if (!bytes || bytes.length === 0) return { simBody: null };
  const text = utf8(bytes);
  if (text !== undefined) return { simBody: text };
  return { simBody: toBase64(bytes), simBodyEncoding: "base64" };
}

/**
 * The bytes of a simBody given as raw JSON text: base64 decoded, a string
 * as its UTF-8, null (or none) as null. Any other JSON value is its compact
 * text, every digit kept, and isJSON is true; an object under a form
 * Content-Type (in headers) is written as a form instead.
 * @returns {{bytes: Uint8Array | null, isJSON: boolean}}
 */
function bodyFromSim(raw, encoding, headers) {
  raw = raw?.trim();
  if (encoding === "base64") {
    const s = raw?.startsWith('"') ? JSON.parse(raw) : undefined;
    if (typeof s !== "string") throw new TypeError("simBody must be a base64 string when simBodyEncoding is base64");
    if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s)) throw new TypeError("simBody is not valid base64");
    return { bytes: fromBase64(s), isJSON: false };
  }
  if (encoding !== undefined && encoding !== null && encoding !== "") {
    throw new TypeError(`simBodyEncoding must be "base64", not ${JSON.stringify(encoding)}`);
  }
  if (!raw || raw === "null") return { bytes: null, isJSON: false };
  if (raw[0] === '"') return { bytes: utf8Encoder.encode(JSON.parse(raw)), isJSON: false };
  if (raw[0] === "{" && mediaType(headerValue(headers, "Content-Type")) === "application/x-www-form-urlencoded") {
    return { bytes: utf8Encoder.encode(formEncode(rawValues(raw))), isJSON: false };
  }
  return { bytes: utf8Encoder.encode(compactJSON(raw)), isJSON: true };
}

/**
 * simHeaders or simQueryParams, given as raw JSON text, as name -> values
 * (Go's simhttp.Values): a value is a string, an array, or another scalar
 * that counts as its JSON text; null is no value.
 * @returns {Map<string, string[]>}
 */
function rawValues(raw) {
  /** @type {Map<string, string[]>} */
  const out = new Map();
  for (const [name, value] of rawEntries(raw ?? "{}")) {
    if (value === "null") {
      out.delete(name);
    } else if (value[0] === "[") {
      out.set(name, rawElements(value).map(scalarText));
    } else {
      out.set(name, [scalarText(value)]);
    }
  }
  return out;
}

function scalarText(raw) {
  return raw[0] === '"' ? JSON.parse(raw) : raw;
}

/** The object form of name -> values: one value is a string, more an array. */
function valuesObject(values) {
  /** @type {SimValues} */
  const out = {};
  for (const [name, list] of values) out[name] = list.length === 1 ? list[0] : list;
  return out;
}

/**
 * A raw query decoded as URLSearchParams does (only "&" separates, "+" is
 * a space, a "%" that starts no escape stays).
 * @returns {Map<string, string[]>}
 */
function parseQuery(query) {
  const out = new Map();
  // A leading "?" is part of the query here: URLSearchParams drops one.
  for (const [name, value] of new URLSearchParams("?" + query)) {
    if (!out.has(name)) out.set(name, []);
    out.get(name).push(value);
  }
  return out;
}

/**
 * name -> values encoded as Go's url.Values.Encode: names sorted, a space
 * as "+", every byte but A-Za-z0-9-_.~ escaped.
 */
function formEncode(values) {
  const esc = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase()).replace(/%20/g, "+");
  const parts = [];
  for (const name of [...values.keys()].sort(byCodeUnits)) {
    for (const v of values.get(name)) parts.push(esc(name) + "=" + esc(v));
  }
  return parts.join("&");
}

/** Orders strings as Go's sort.Strings does (by bytes, which UTF-16 order matches outside the astral planes). */
function byCodeUnits(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** JSON text without the spaces between tokens; strings and numbers as written. */
function compactJSON(raw) {
  let out = "";
  for (let i = 0; i < raw.length; ) {
    const c = raw[i];
    if (c === '"') {
      const end = valueEnd(raw, i);
      out += raw.slice(i, end);
      i = end;
    } else {
      if (!" \n\r\t".includes(c)) out += c;
      i++;
    }
  }
  return out;
}

/** Whether a response with this status to this method has no body (RFC 9110 6.4.1, 9.3.2, 15.3.6). */
function bodyless(method, status) {
  return method === "HEAD" || status < 200 || status === 204 || status === 205 || status === 304;
}

/**
 * The sim_req of an HTTP request (Go's simhttp.FromRequest): the target's
 * path and query exactly as sent, end-to-end headers (Host among them),
 * the exact body.
 * @param {HTTPMessage} message
 * @returns {SimRequest}
 */
function toSimReq({ method = "GET", target = "/", headers, body }) {
  const q = target.indexOf("?");
  const query = q < 0 ? "" : target.slice(q + 1);
  return {
    simMethod: method,
    simEndpoint: q < 0 ? target : target.slice(0, q),
    simQuery: query,
    simQueryParams: valuesObject(parseQuery(query)),
    simRouteParams: {},
    ...headersToSim(headers),
    ...bodyToSim(body),
  };
}

/**
 * The HTTP request a web server would have handed its handler for a
 * sim_req (Go's simhttp.Request.HTTPRequest): method (POST by default),
 * target (simEndpoint and simQuery, or simQueryParams in name order when a
 * SimClient gave no simQuery), the end-to-end headers with Host among them,
 * and the exact body with its Content-Length. A JSON simBody that is no
 * string gets Content-Type application/json unless one is set.
 * @param {string | object} sim the sim_req, best as its raw JSON text (numbers keep every digit)
 * @returns {Required<Pick<HTTPMessage, "method" | "target" | "headers" | "body">>}
 */
function fromSimReq(sim) {
  const text = typeof sim === "string" ? sim : JSON.stringify(sim);
  const obj = JSON.parse(text);
  let endpoint = typeof obj.simEndpoint === "string" ? obj.simEndpoint : "";
  if (!endpoint.startsWith("/")) endpoint = "/" + endpoint;
  let query = "";
  if (typeof obj.simQuery === "string") query = obj.simQuery;
  else query = formEncode(rawValues(rawField(text, "simQueryParams")));
  const headers = headersFromSim(rawField(text, "simHeaders"), obj.simHeadersEncoding);
  const { bytes, isJSON } = bodyFromSim(rawField(text, "simBody"), obj.simBodyEncoding, headers);
  if (isJSON && headerValue(headers, "Content-Type") === undefined) headers.push(["Content-Type", "application/json"]);
  const declared = headerValue(headers, "Content-Length") !== undefined;
  const out = headers.filter(([name]) => name !== "Content-Length");
  if (bytes?.length || declared) out.push(["Content-Length", String(bytes?.length ?? 0)]);
  return {
    method: typeof obj.simMethod === "string" && obj.simMethod !== "" ? obj.simMethod : "POST",
    target: query === "" ? endpoint : endpoint + "?" + query,
    headers: out,
    body: bytes?.length ? bytes : null,
  };
}

/**
 * The sim_res of a handler's response (Go's simhttp.FromResponse): status,
 * end-to-end headers (Content-Length only when the handler set it), the
 * exact body.
 * @param {HTTPMessage} message
 * @returns {SimResponse}
 */
function toSimRes({ status = 200, headers, body }) {
  return { simStatus: status, ...headersToSim(headers), ...bodyToSim(body) };
}

/**
 * What a caller gets for a sim_res in answer to method (Go's
 * simhttp.Response.HTTPResponse), following RFC 9110: no body for HEAD,
 * 1xx, 204, 205 and 304; Content-Length the body's length, except for HEAD
 * and 304, where the declared one is kept; none for 1xx and 204, 0 for 205.
 * A JSON simBody that is no string gets Content-Type application/json
 * unless one is set. The head of a streamed answer (streamed true) keeps
 * the Content-Length the SimServer declared, or has none: its simBody is
 * only the first bytes.
 * @param {string | object} sim the sim_res, best as its raw JSON text
 * @param {string} method the request's
 * @param {boolean} [streamed] false
 * @returns {Required<Pick<HTTPMessage, "status" | "headers" | "body">>}
 */
function fromSimRes(sim, method, streamed = false) {
  const text = typeof sim === "string" ? sim : JSON.stringify(sim);
  const obj = JSON.parse(text);
  const status = typeof obj.simStatus === "number" && obj.simStatus !== 0 ? obj.simStatus : 200;
  const headers = headersFromSim(rawField(text, "simHeaders"), obj.simHeadersEncoding);
  const { bytes, isJSON } = bodyFromSim(rawField(text, "simBody"), obj.simBodyEncoding, headers);
  if (isJSON && headerValue(headers, "Content-Type") === undefined) headers.push(["Content-Type", "application/json"]);
  const declared = headerValue(headers, "Content-Length");
  const out = headers.filter(([name]) => name !== "Content-Length");
  const length = bytes?.length ?? 0;
  if (status < 200 || status === 204) {
    // no Content-Length
  } else if (status === 205) {
    out.push(["Content-Length", "0"]);
  } else if (method === "HEAD" || status === 304 || streamed) {
    if (declared !== undefined && /^\d+$/.test(declared) && BigInt(declared) < 2n ** 63n) out.push(["Content-Length", String(BigInt(declared))]);
    else if (method === "HEAD" && status !== 304 && length > 0 && !streamed) out.push(["Content-Length", String(length)]);
  } else {
    out.push(["Content-Length", String(length)]);
  }
  return { status, headers: out, body: bodyless(method, status) || !length ? null : bytes };
}

// The adapters: standard Request and Response objects.

/**
 * The HTTP message of a Request that a SimClient sends (session.fetch):
 * its headers as the platform holds them (a Headers object joins repeated
 * values with ", "), Host the URL's host, the exact body, and
 * Content-Length as the platform would send it: the body's length, "0" for
 * an empty POST, PUT or PATCH, else none.
 * @param {Request} request
 * @param {string} [target] the path and query as given, before the URL parser cleaned them; by default the URL's
 * @returns {Promise<HTTPMessage>}
 */
async function requestMessage(request, target) {
  const url = new URL(request.url);
  const body = request.body ? new Uint8Array(await request.arrayBuffer()) : null;
  /** @type {HeaderList} */
  const headers = [["Host", url.host]];
  request.headers.forEach((value, name) => {
    if (name !== "host" && name !== "content-length") headers.push([name, value]);
  });
  if (body?.length) headers.push(["Content-Length", String(body.length)]);
  else if (["POST", "PUT", "PATCH"].includes(request.method.toUpperCase())) headers.push(["Content-Length", "0"]);
  return { method: request.method, target: target ?? url.pathname + url.search, headers, body: body?.length ? body : null };
}

/**
 * The Request a handler gets for a sim_req: its URL is the one the caller
 * asked for, `${X-Forwarded-Proto or the relay's scheme}://${Host or the
 * relay's host}${target}`, with the headers and body as sent. Where the
 * platform refuses a header (a browser's Request drops Host and
 * Content-Length) it is left out. Throws when the sim_req maps to no
 * Request (a method such as CONNECT, a broken simBody).
 * @param {string | object} sim the sim_req, best as raw JSON text
 * @param {URL} relay the relay's URL, for a request that names no host
 * @param {HeaderList} [extra] headers set last, replacing the caller's
 * @param {AbortSignal} [signal] the request's signal: aborts when the caller withdraws it
 * @returns {{request: Request, target: string}}
 */
function handlerRequest(sim, relay, extra = [], signal = undefined) {
  const m = fromSimReq(sim);
  const headers = new Headers();
  for (const [name, value] of m.headers) {
    try {
      headers.append(name, value);
    } catch {
      // a name or value the platform refuses (a control character): left out
    }
  }
  for (const [name, value] of extra) headers.set(name, value);
  const url = callerURL(headerValue(m.headers, "X-Forwarded-Proto"), headerValue(m.headers, "Host"), relay) + m.target;
  let body = m.body;
  if (/^(GET|HEAD)$/i.test(m.method)) {
    body = null; // a Request refuses a body here, so it cannot say how long one is either
    headers.delete("Content-Length");
  }
  // The body goes in as bytes: a string body would add a Content-Type.
  return { request: new Request(url, { method: m.method, headers, body, signal }), target: m.target };
}

/** The scheme and host the caller asked for, the relay's where they are missing or no valid URL. */
function callerURL(proto, host, relay) {
  let scheme = (proto ?? "").split(",")[0].trim().toLowerCase();
  if (scheme !== "http" && scheme !== "https") scheme = relay.protocol.slice(0, -1);
  if (host !== undefined && host !== "" && !/[/?#@\\\s]/.test(host)) {
    try {
      const u = new URL(`${scheme}://${host}/`);
      if (u.host) return `${scheme}://${u.host}`;
    } catch {
      // not a host: the relay's
    }
  }
  return `${scheme}://${relay.host}`;
}

/**
 * The HTTP message of a handler's Response: status, headers as set
 * (repeated Set-Cookie apart, other repeated values joined by the
 * platform), the exact body.
 * @param {Response} response
 * @returns {Promise<HTTPMessage>}
 */
async function responseMessage(response) {
  const body = new Uint8Array(await response.arrayBuffer());
  return { status: response.status, headers: responseHeaders(response), body: body.length ? body : null };
}

/**
 * The header pairs of a handler's Response: as set, repeated Set-Cookie
 * apart, other repeated values joined by the platform.
 * @param {Response} response
 * @returns {HeaderList}
 */
function responseHeaders(response) {
  /** @type {HeaderList} */
  const headers = [];
  response.headers.forEach((value, name) => {
    if (name !== "set-cookie") headers.push([name, value]);
  });
  const cookies = response.headers.getSetCookie?.() ?? [response.headers.get("set-cookie")].filter((c) => c !== null);
  for (const c of cookies) headers.push(["set-cookie", c]);
  return headers;
}

/**
 * The Response a caller of session.fetch gets for a sim_res, as the /via/
 * gateway writes it. A header the platform refuses is left out (a browser's
 * Response drops Set-Cookie). A 1xx answer, which no Response can hold,
 * rejects with a RelayError 502.
 * @param {string | object} sim the sim_res, best as raw JSON text
 * @param {string} method the request's
 * @returns {Response}
 */
function callerResponse(sim, method) {
  let m;
  try {
    m = fromSimRes(sim, method);
  } catch (err) {
    throw new RelayError(502, "bad_gateway", `the SimServer's answer maps to no response: ${err instanceof Error ? err.message : err}`);
  }
  if (m.status < 200 || m.status > 599) {
    throw new RelayError(502, "bad_gateway", `the SimServer answered ${m.status}, which is not a final HTTP status`);
  }
  return new Response(m.body, { status: m.status, headers: platformHeaders(m.headers) });
}

/** Headers of the pairs, leaving out any name or value the platform refuses (a browser's Response drops Set-Cookie). */
function platformHeaders(pairs) {
  const headers = new Headers();
  for (const [name, value] of pairs) {
    try {
      headers.append(name, value);
    } catch {
      // a name or value the platform refuses: left out
    }
  }
  return headers;
}

/**
 * The path and query of a URL string exactly as given, escaped as the URL
 * parser would but not cleaned (no dot segments removed, "//" kept); the
 * fragment never travels. Undefined for a relative reference that is no
 * absolute path, which the URL parser resolves.
 */
function rawTarget(input) {
  const s = input.split("#")[0];
  const origin = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?\\]*/.exec(s);
  let rest;
  if (origin) rest = s.slice(origin[0].length);
  else if (s.startsWith("/") && !s.startsWith("//")) rest = s;
  else return undefined;
  if (rest.includes("\\")) return undefined; // a special URL reads "\" as "/": leave it to the parser
  if (!rest.startsWith("/")) rest = "/" + rest;
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? undefined : rest.slice(q + 1);
  // The URL standard's path and (special) query percent-encode sets.
  const escaped = path.replace(/[^\x21\x23-\x3b\x3d\x3f-\x5f\x61-\x7a\x7c\x7e]+/g, percentEncode);
  return query === undefined ? escaped : escaped + "?" + query.replace(/[^\x21\x23-\x26\x28-\x3b\x3d\x3f-\x7e]+/g, percentEncode);
}

function percentEncode(s) {
  return Array.from(utf8Encoder.encode(s), (b) => "%" + b.toString(16).toUpperCase().padStart(2, "0")).join("");
}

/**
 * The mapping functions, exported for the SDK's own tests. Not API: names
 * and shapes change without notice.
 * @internal
 */
export const __mapping = Object.freeze({
  toSimReq, fromSimReq, toSimRes, fromSimRes,
  requestMessage, handlerRequest, responseMessage, callerResponse,
  rawTarget, rawField, canonicalName, endToEnd, netAddr,
});

// ---------------------------------------------------------------------------
// Bytes and text.

/** The media type of a Content-Type, lower case, without parameters. */
function mediaType(contentType) {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** The text of bytes, or undefined when they are not valid UTF-8. */
function utf8(bytes) {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

function toBase64(bytes) {
  return btoa(byteString(bytes));
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
  let found;
  for (const [name, value] of rawEntries(text)) if (name === key) found = value; // the last one wins, as in JSON.parse
  return found;
}

/** The names and raw value texts of the JSON object text, in order; none when it is no object. */
function rawEntries(text) {
  /** @type {[string, string][]} */
  const out = [];
  let i = skipSpace(text, 0);
  if (text[i] !== "{") return out;
  i = skipSpace(text, i + 1);
  while (i < text.length && text[i] !== "}") {
    const keyEnd = valueEnd(text, i);
    const name = JSON.parse(text.slice(i, keyEnd));
    const start = skipSpace(text, skipSpace(text, keyEnd) + 1); // past ':'
    const end = valueEnd(text, start);
    out.push([name, text.slice(start, end)]);
    i = skipSpace(text, end);
    if (text[i] === ",") i = skipSpace(text, i + 1);
  }
  return out;
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
