import { assertEquals, assertThrows } from "../assert.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { decodeNutssInfo, encodeNutssInfo, TcpNutss } from "../../src/techniques/tcp_nutss.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

Deno.test("the initiator's progress data is nutss2:TOKEN and round-trips", () => {
  assertEquals(encodeNutssInfo(TOKEN), `nutss2:${TOKEN}`);
  assertEquals(decodeNutssInfo(`nutss2:${TOKEN}`), TOKEN);
});

Deno.test("malformed tcp-nutss progress data is refused", () => {
  for (
    const bad of [
      "",
      "nutss1",
      "nutss2",
      "nutss2:",
      `nutss1:${TOKEN}`,
      `nutss2:${TOKEN.toUpperCase()}`,
      `nutss2:${TOKEN}:1`,
      `nutss2:${TOKEN.slice(2)}`,
    ]
  ) {
    assertThrows(
      () => decodeNutssInfo(bad),
      { name: "SyntaxError", message: 'tcp-nutss expects EXTRA "nutss2:TOKEN"' },
      bad,
    );
  }
});

Deno.test("tcp-nutss validates ports, TTL and EXTRA before anything starts", () => {
  const base: AttemptSpec = {
    technique: "tcp-nutss",
    role: "initiate",
    id: "x",
    client: 1,
    srcIp: "10.0.1.2",
    srcPorts: [1],
    dstIp: "10.0.2.2",
    dstPorts: [2, 3],
    timeoutMs: 1000,
  };
  const nutss = new TcpNutss();
  nutss.validate(base);
  assertThrows(() => nutss.validate({ ...base, srcPorts: [1, 2] }), { name: "RangeError" });
  assertThrows(() => nutss.validate({ ...base, lowTtl: 0 }), { name: "RangeError" });
  assertThrows(() => nutss.validate({ ...base, role: "respond", extra: "nutss1" }), {
    name: "SyntaxError",
  });
  nutss.validate({ ...base, role: "respond", extra: `nutss2:${TOKEN}` });
});

Deno.test("tcp-nutss without a TTL leaves it to hop discovery; a given one must be 1-255", () => {
  const spec: AttemptSpec = {
    technique: "tcp-nutss",
    role: "initiate",
    id: "x",
    client: 1,
    srcIp: "10.0.1.2",
    srcPorts: [1],
    dstIp: "10.0.2.2",
    dstPorts: [2],
    timeoutMs: 1000,
  };
  const nutss = new TcpNutss();
  nutss.validate(spec);
  nutss.validate({ ...spec, lowTtl: 255 });
  assertThrows(() => nutss.validate({ ...spec, lowTtl: 256 }), {
    name: "RangeError",
    message: "tcp-nutss low TTL must be 1-255",
  });
});
