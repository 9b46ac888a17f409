// The types of c2cvia.js, the JavaScript SDK of the c2cvia relay, for
// TypeScript and editors. They describe the module as it runs in browsers
// and Node 20+: only standard Fetch types (Request, Response, RequestInit,
// AbortSignal, URL), so they check against the DOM library or @types/node
// alike. The wire contract behind them is the relay's docs/API.md.

// ---------------------------------------------------------------------------
// JSON with every digit: what peer messages carry.

/**
 * A JSON value as the SDK reads it from the wire ({@link parseJSON}): an
 * integer that a number would round (beyond ±2^53 − 1) is a `bigint`, a
 * decimal that a number would round is a {@link JSONNumber} that keeps its
 * text; every other number is a `number`.
 */
export type JSONValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | JSONNumber
  | JSONValue[]
  | { [key: string]: JSONValue };

/**
 * A JSON number kept as written, for a decimal that a `number` would round
 * (`3.141592653589793238462643383279`). {@link stringifyJSON} writes its text
 * back unchanged; arithmetic sees the nearest `number` (`valueOf`).
 */
export declare class JSONNumber {
  /** @param text a JSON number, as JSON writes it */
  constructor(text: string);
  /** The number exactly as written in the JSON text. */
  readonly text: string;
  /** The nearest double: what `+n` and `n * 2` use. */
  valueOf(): number;
  /** The text, as written. */
  toString(): string;
  /** The nearest double: what plain JSON.stringify writes (stringifyJSON writes the text). */
  toJSON(): number;
}

/**
 * Parses JSON text as `JSON.parse` does, but loses no digit: big integers
 * become `bigint`, digit-losing decimals {@link JSONNumber}. Throws a
 * SyntaxError on text that is not JSON.
 */
export declare function parseJSON(text: string): JSONValue;

/**
 * Writes value as JSON as `JSON.stringify` does, and also writes a `bigint`
 * and a {@link JSONNumber} as the digits they hold. Throws a TypeError for
 * what JSON cannot hold (a cycle, a symbol at the top).
 */
export declare function stringifyJSON(value: unknown): string;

// ---------------------------------------------------------------------------
// Failures, retries and defaults.

/**
 * A failure answered by the relay. Network failures reject with the
 * platform's own error (a TypeError from fetch); cancellation with an
 * AbortError.
 */
export declare class RelayError extends Error {
  /**
   * @param status the HTTP status
   * @param code the snake_case code of the relay's error shape
   * @param message what went wrong, for people
   * @param retryAfter seconds, from the Retry-After header
   */
  constructor(status: number, code: string, message: string, retryAfter?: number);
  readonly name: "RelayError";
  /** The HTTP status the relay answered: 400, 401, 404, 410, 429, 502, … */
  readonly status: number;
  /**
   * The snake_case code of the relay's JSON error shape (`net_not_found`,
   * `expired`, `rate_limited`, …; docs/API.md lists them), or
   * `http_<status>` when the body is not that shape.
   */
  readonly code: string;
  /** Seconds to wait before trying again, from Retry-After (a 429 or 503); undefined without one. */
  readonly retryAfter: number | undefined;
}

/** How retries wait: doubling from initial up to max, with jitter. */
export interface BackoffOptions {
  /** Milliseconds before the first retry, before jitter; 250. */
  initial?: number | undefined;
  /** Milliseconds that no wait exceeds, before jitter; 30000 (30 s). */
  max?: number | undefined;
}

/**
 * The SDK's defaults, frozen: what an option left out means. Durations are
 * in the units of the option they stand for.
 */
export declare const defaults: Readonly<{
  /** Retries of a call that failed for now (network, 408, 429, 5xx) before it rejects: 9. */
  retries: number;
  /** Milliseconds before the first retry: 250. */
  backoffInitial: number;
  /** Milliseconds no retry waits beyond: 30000. */
  backoffMax: number;
  /** Handlers serve() runs at once, streaming ones not counted: 4. */
  concurrency: number;
  /** Seconds a request is the SimServer's before the relay hands it out again: 30. */
  lease: number;
  /** Seconds one long poll waits at the relay: 25. */
  wait: number;
  /** Milliseconds serve() waits after a poll for its handlers' answers to go with the next poll: 2. */
  linger: number;
}>;

/**
 * Milliseconds to wait before retry number `retry` (0 for the first):
 * `initial` doubling each retry up to `max`, with jitter (half to all of
 * it), and never less than `retryAfter` seconds when the relay sent
 * Retry-After. With the defaults: 125–250 ms, then 250–500 ms, … up to
 * 15–30 s.
 */
export declare function backoffDelay(
  retry: number,
  options?: BackoffOptions & {
    /** Seconds, from the relay's Retry-After (RelayError.retryAfter): the least the delay is. */
    retryAfter?: number | undefined;
  },
): number;

// ---------------------------------------------------------------------------
// Serving: a fetch handler becomes the SimServer of a net.

/** The caller's address as the relay saw it (the shape of Deno.serve's). */
export interface RemoteAddr {
  transport: "tcp";
  /** An IPv4 or IPv6 address, without brackets: "203.0.113.7", "2001:db8::1". */
  hostname: string;
  port: number;
}

/** What a handler learns besides the request: its second argument. */
export interface HandlerInfo {
  /** The caller's address as the relay saw it; undefined from a relay that does not tell. */
  remoteAddr: RemoteAddr | undefined;
  /**
   * Aborts (an AbortError) when the caller withdraws the request (a /via/
   * caller that goes away, a session.fetch aborted), when its lease is
   * lost, and for a streaming answer on close(). The same as request.signal.
   */
  signal: AbortSignal;
  /**
   * Resolves once the answer has gone out whole to the relay; rejects when
   * it is abandoned (the request withdrawn, its lease lost, the answer
   * refused). A handler need not look at it: its rejection is not unhandled.
   */
  completed: Promise<void>;
  /** The caller's peer_id; `via` for a request through the /via/ gateway. Also the header `C2cvia-From`. */
  from: string;
  /** The request's id at the relay. Also the header `C2cvia-Rid`. */
  rid: string;
  /**
   * The path and query exactly as the caller sent them: request.url is a
   * parsed URL, which removes dot segments and may re-encode.
   */
  target: string;
}

/**
 * A standard fetch handler, the shape of Deno.serve's, Cloudflare Workers'
 * and Hono's `app.fetch`. A throw answers 500 and goes to onError.
 */
export type FetchHandler = (request: Request, info: HandlerInfo) => Response | Promise<Response>;

/** The options of {@link serve}. */
export interface ServeOptions {
  /** The relay's URL ("http://localhost:8080"); in a browser page, location.origin by default. */
  relay?: string | undefined;
  /** The net to serve. */
  net: string;
  /** The net's key, 16 characters or more; the first key used claims the net. */
  key: string;
  /** The handler each request of the net goes to. */
  fetch: FetchHandler;
  /** Handlers running at most at once, streaming answers not counted; 4. */
  concurrency?: number | undefined;
  /** Seconds a request is ours before the relay hands it out again; 30, extended every lease/2 while its handler runs or streams. */
  lease?: number | undefined;
  /** Seconds one long poll waits at the relay; 25, under common proxy idle timeouts. */
  wait?: number | undefined;
  /** Send the browser CORS preflights (OPTIONS) of the net's gateway to the handler instead of letting the relay answer them; false. */
  preflight?: boolean | undefined;
  /** Milliseconds the loop waits after a poll for its handlers' answers to go with the next poll; 2, and 0 polls at once. */
  linger?: number | undefined;
  /**
   * Handler errors and answers the relay refused; `console.error` by
   * default. A Response it returns (or resolves to) answers the failed
   * request instead of the plain 500. A handler that rejects with its
   * withdrawn request's signal reason is not reported.
   */
  onError?: ((err: unknown) => void | Response | Promise<void | Response>) | undefined;
  /** Aborting it closes the server, as close() does. */
  signal?: AbortSignal | undefined;
  /** Retries of a relay call that failed for now (network, 408, 429, 5xx) before serving stops; 9. */
  retries?: number | undefined;
  /** How those retries wait. */
  backoff?: BackoffOptions | undefined;
}

/** A running {@link serve}. */
export interface Server {
  /**
   * Stops taking requests, waits for the running handlers to answer, and
   * resolves once they have; streaming answers are aborted.
   */
  close(): Promise<void>;
  /**
   * Settles when serving ends: resolves after close(), rejects with a
   * RelayError when the relay refuses the poll (a wrong key, a bad net) or
   * with the last error once retries are spent.
   */
  readonly closed: Promise<void>;
}

/**
 * Serves the requests of a net with a fetch handler, from anywhere that
 * can make HTTP calls: no open port. The Request is the one the caller
 * sent (its URL with the Host and scheme asked for, its headers, the
 * body's exact bytes). An answer whose body has not ended at once, or is
 * larger than 512 KiB, streams in parts.
 */
export declare function serve(options: ServeOptions): Server;

// ---------------------------------------------------------------------------
// A SimClient: fetch through the relay, peer messages.

/** The options of {@link login}. */
export interface LoginOptions {
  /** The relay's URL ("http://localhost:8080"); in a browser page, location.origin by default. */
  relay?: string | undefined;
  /** The net to log in to. */
  net: string;
  /** Retries of a call that failed for now (network, 408, 429, 5xx) before it rejects; 9. */
  retries?: number | undefined;
  /** How those retries wait. */
  backoff?: BackoffOptions | undefined;
}

/** The fields every peer message has. */
interface MessageFields {
  /** The cursor: pass it as `since` to resume after this message. */
  id: number;
  /** The sender's peer_id. */
  from: string;
  /** The JSON value sent, every digit kept (big integers as bigint). */
  data: JSONValue;
  /** When the relay took it. */
  sentAt: Date;
}

/** A peer message: sent to one peer, published on a topic, or broadcast to the net. */
export type Message =
  | (MessageFields & { kind: "unicast" | "broadcast"; topic: null })
  | (MessageFields & { kind: "multicast"; topic: string });

/** A login of the net, from {@link Session.peers}. */
export interface Peer {
  peerId: string;
  /** When the relay last heard from it. */
  lastSeen: Date;
}

/** A login to a net as a SimClient, from {@link login}. */
export interface Session {
  /** The secret of this login. It changes when the session logs in again after its token expired. */
  readonly token: string;
  /** Its public id in the net, which others send to. Changes with a new login. */
  readonly peerId: string;
  readonly net: string;
  /** When the token expires; the session then logs in again by itself. */
  readonly expiresAt: Date;
  /**
   * Standard fetch through the relay to the net's SimServer: the URL's
   * path and query (a string's exactly as written) and its host, as the
   * Host header; a relative URL names the relay's host. Follows redirects
   * unless `redirect: "manual"`. Resolves once the answer's head is in; a
   * streamed body reads on as the SimServer sends it. init.signal
   * aborting, or the body cancelled before its end, withdraws the request.
   * Rejects with a RelayError for the relay's refusals (410 `expired`,
   * `failed`, `cancelled`).
   */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** Sends data (any JSON value; bigint and JSONNumber keep their digits) to one peer. */
  send(peerId: string, data: unknown): Promise<{ id: number }>;
  /** Receives the messages published on topic from now on. */
  subscribe(topic: string): Promise<{ topic: string; subscribed: boolean }>;
  unsubscribe(topic: string): Promise<{ topic: string; subscribed: boolean }>;
  /** Sends data to every subscriber of topic; receivers is how many there were. */
  publish(topic: string, data: unknown): Promise<{ id: number; receivers: number }>;
  /** Sends data to every login of the net but this one. */
  broadcast(data: unknown): Promise<{ id: number; receivers: number }>;
  /**
   * Incoming messages, oldest first, waiting for more: `for await` them,
   * and `break` to release the connection. Without since, from the oldest
   * the relay kept; later iterators resume after the last one received.
   */
  messages(options?: { since?: number | undefined }): AsyncIterableIterator<Message>;
  /** The logins of the net the relay has seen lately (the last 5 minutes), this one among them. */
  peers(): Promise<Peer[]>;
  /**
   * Ends every open messages() iterator and call in flight; resolves once
   * the withdrawals of requests aborted before then have gone out (each
   * tries for at most 10 s).
   */
  close(): Promise<void>;
}

/** Logs in to a net as a SimClient. */
export declare function login(options: LoginOptions): Promise<Session>;
