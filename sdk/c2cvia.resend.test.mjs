// session.fetch sends a request again after a network error only when Go's
// net/http would: GET, HEAD, OPTIONS and TRACE, and any request with an
// Idempotency-Key. Others fail at once, since the lost one may have
// arrived (the Go SDK's rule, client.HTTPClient).

import assert from "node:assert/strict";
import { serve, login } from "./c2cvia.js";
import { RELAY, FLAKY, KEY, test, newNet, control, count, until, within } from "./testenv.mjs";

const push = "/api/v1/client/pushreq";

/** A session through the flaky front, whose next pushreq connections drop until up again. */
async function setup(t) {
  const net = newNet();
  const server = serve({ relay: RELAY, net, key: KEY, onError: () => {}, fetch: (req) => new Response(`${req.method} served`) });
  t.after(() => server.close());
  const s = await login({ relay: FLAKY, net, backoff: { initial: 20, max: 40 } });
  t.after(() => s.close());
  t.after(() => control("/flaky?mode=up"));
  return s;
}

for (const [name, init] of [
  ["a GET", {}],
  ["a DELETE with an Idempotency-Key", { method: "DELETE", headers: { "Idempotency-Key": "k-1" } }],
]) {
  test(`${name} is sent again after a network error`, async (t) => {
    const s = await setup(t);
    const before = await count(push, "flaky");
    await control("/flaky?mode=drop");
    const res = s.fetch("/again", init);
    await until(async () => (await count(push, "flaky")) > before, "the first pushreq, dropped");
    await control("/flaky?mode=up");
    const got = await within(res, 15_000, "the answer once the relay is back");
    assert.equal(await got.text(), `${init.method ?? "GET"} served`);
    assert.ok((await count(push, "flaky")) - before >= 2, "sent again");
  });
}

test("a POST is not sent again after a network error: it may have arrived", async (t) => {
  const s = await setup(t);
  const before = await count(push, "flaky");
  await control("/flaky?mode=drop");
  await assert.rejects(within(s.fetch("/once", { method: "POST", body: "x" }), 15_000, "the POST's failure"));
  assert.equal((await count(push, "flaky")) - before, 1, "one try");
});
