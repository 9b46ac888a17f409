// Calls the README's Hono app through session.fetch, as its curl lines call
// it through the gateway, and prints what came back as JSON, one line, for
// sdk_package_test.go to compare: {peerId, answers: [...]}.

import { login } from "c2cvia";

const relay = process.env.C2CVIA_RELAY;
if (!relay) throw new Error("C2CVIA_RELAY is unset");

const ada = await login({ relay, net: "hono-demo" });
const calls: [string, RequestInit][] = [
  ["/", {}],
  ["/users/42", { headers: { "Accept-Language": "fr" } }],
  ["/users", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "Ada" }) }],
  ["/nowhere", {}],
];
const answers = [];
for (const [path, init] of calls) {
  const res = await ada.fetch(path, init);
  answers.push({
    status: res.status,
    contentType: res.headers.get("Content-Type"),
    location: res.headers.get("Location"),
    body: await res.text(),
  });
}
console.log(JSON.stringify({ peerId: ada.peerId, answers }));
await ada.close();
