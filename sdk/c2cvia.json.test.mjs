// Node tests of parseJSON, stringifyJSON and JSONNumber: JSON that keeps
// every digit of its numbers (the numbers case of testdata/sdk-cases.json
// checks them across the relay).

import assert from "node:assert/strict";
import { parseJSON, stringifyJSON, JSONNumber } from "./c2cvia.js";
import { test } from "./testenv.mjs";

test("parseJSON: Numbers where a double holds the literal, BigInt and JSONNumber where it does not", () => {
  assert.equal(parseJSON("9007199254740991"), 9007199254740991);
  assert.equal(parseJSON("-9007199254740991"), -9007199254740991);
  assert.equal(parseJSON("9007199254740992"), 9007199254740992n, "past 2^53 - 1: a BigInt, even where the double happens to be exact");
  assert.equal(parseJSON("-12345678901234567890"), -12345678901234567890n);
  for (const [text, value] of [["0.1", 0.1], ["1.50", 1.5], ["1e-7", 1e-7], ["-1E+2", -100], ["1e21", 1e21], ["5e-324", 5e-324], ["0.0", 0], ["-0.0", -0]]) {
    assert.equal(parseJSON(text), value, text);
  }
  for (const text of ["3.141592653589793238462643383279", "1e400", "0.10000000000000000001", "9007199254740993.0", "2.5e-324"]) {
    const n = parseJSON(text);
    assert.ok(n instanceof JSONNumber, text);
    assert.equal(n.text, text);
    assert.equal(String(n), text);
    assert.equal(+n, Number(text), "valueOf is the nearest double");
  }
  assert.deepEqual(parseJSON(' { "a" : [ 1 , true , false , null , "x\\u00e9\\"" ] , "b" : { } , "c" : [ ] } '), { a: [1, true, false, null, 'xé"'], b: {}, c: [] });
  const proto = parseJSON('{"__proto__": {"polluted": 1}}');
  assert.equal(Object.getPrototypeOf(proto), Object.prototype, "__proto__ is a key, as in JSON.parse");
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
  assert.equal(parseJSON('{"a":1,"a":2}').a, 2, "the last duplicate wins, as in JSON.parse");
});

test("parseJSON refuses what JSON.parse refuses, with a SyntaxError", () => {
  for (const bad of ["", " ", "{", "[1,]", "[1 2]", "01", "1.", ".5", "+1", "-", "1e", '"abc', '"\\x"', '"a\nb"', "tru", "nul", "{a:1}", '{"a" 1}', '{"a":1,}', "1 2", "NaN", "Infinity"]) {
    assert.throws(() => JSON.parse(bad), SyntaxError, `JSON.parse ${JSON.stringify(bad)}`);
    assert.throws(() => parseJSON(bad), SyntaxError, JSON.stringify(bad));
  }
  assert.throws(() => parseJSON(undefined), TypeError);
  assert.throws(() => parseJSON(Buffer.from("1")), TypeError);
});

test("stringifyJSON writes BigInt and JSONNumber as their digits, everything else as JSON.stringify", () => {
  assert.equal(stringifyJSON(12345678901234567890n), "12345678901234567890");
  assert.equal(stringifyJSON({ n: -5n, x: new JSONNumber("1.000000000000000000001") }), '{"n":-5,"x":1.000000000000000000001}');
  assert.throws(() => JSON.stringify(1n), TypeError, "JSON.stringify cannot");
  for (const value of [
    null, true, "s\u2028\"\\", 0, -0, 1.5, NaN, Infinity, [], {}, [undefined, () => 1, Symbol("s"), NaN],
    { a: undefined, b: () => 1, c: new Date(0), d: { toJSON: (k) => `key ${k}` }, e: [new Number(3), new String("s"), new Boolean(false)] },
  ]) {
    assert.equal(stringifyJSON(value), JSON.stringify(value), JSON.stringify(value));
  }
  assert.equal(stringifyJSON(undefined), undefined);
  assert.equal(JSON.stringify(new JSONNumber("1e400")), "null", "JSON.stringify writes the nearest double");
  const cycle = { a: 1 };
  cycle.self = cycle;
  assert.throws(() => stringifyJSON(cycle), TypeError);
  const shared = { x: 1 };
  assert.equal(stringifyJSON([shared, shared]), '[{"x":1},{"x":1}]', "the same object twice is no cycle");
  assert.throws(() => new JSONNumber("1.2.3"), TypeError);
  assert.throws(() => new JSONNumber(5), TypeError);
});

test("every literal goes back as it came, digit for digit", () => {
  for (const text of ["[12345678901234567890,-0.5,0.1,19.99,1e-7,3.141592653589793238462643383279]", '{"id":123456789012345678901234567890,"n":1}', "1e400", "-9007199254740993"]) {
    assert.equal(stringifyJSON(parseJSON(text)), text);
  }
});
