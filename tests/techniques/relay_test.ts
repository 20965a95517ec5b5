import { assertEquals, assertThrows } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { decodeStart, encodeStart, isUsableRelayAddress } from "../../src/techniques/relay.ts";
import { Relay } from "../../src/techniques/relay.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

Deno.test("the initiator's first relay message round-trips (IPv4 and IPv6, allocated or asking)", () => {
  for (
    const start of [
      { token: TOKEN, kind: "ask" as const },
      {
        token: TOKEN,
        kind: "allocated" as const,
        relayed: inetAddress("203.0.113.1", 50000),
        server: inetAddress("203.0.113.1", 3478),
      },
      {
        token: TOKEN,
        kind: "allocated" as const,
        relayed: inetAddress("2001:db8::1", 50000),
        server: inetAddress("2001:db8::2", 3478),
      },
    ]
  ) {
    assertEquals(decodeStart(encodeStart(start)), start);
  }
});

const BAD: [string, ErrorConstructor | RangeErrorConstructor | SyntaxErrorConstructor][] = [
  ["relay2,0123456789abcdef0123456789abcdef,q", SyntaxError],
  ["relay1,short,q", SyntaxError],
  [`relay1,${TOKEN},x`, SyntaxError],
  [`relay1,${TOKEN},a,203.0.113.1,0,203.0.113.1,3478`, SyntaxError],
  [`relay1,${TOKEN},a,203.0.113.1,50000,203.0.113.1`, SyntaxError],
  // A peer must not steer the connecting side to this host's own services or to broadcast.
  [`relay1,${TOKEN},a,127.0.0.1,22,203.0.113.1,3478`, RangeError],
  [`relay1,${TOKEN},a,203.0.113.1,50000,0.0.0.0,3478`, RangeError],
  [`relay1,${TOKEN},a,::1,22,::1,3478`, RangeError],
  [`relay1,${TOKEN},a,224.0.0.1,5000,203.0.113.1,3478`, RangeError],
  [`relay1,${TOKEN},a,2001:db8::1,5000,203.0.113.1,3478`, RangeError],
];
for (const [text, kind] of BAD) {
  Deno.test(`"${text.slice(0, 60)}" is refused`, () => {
    assertThrows(() => decodeStart(text), kind);
  });
}

Deno.test("usable relay addresses: public and private unicast yes; loopback, any, multicast no", () => {
  for (const ip of ["172.16.0.1", "10.0.0.1", "203.0.113.9", "2001:db8::1", "fd00::1"]) {
    assertEquals(isUsableRelayAddress(ip), true, ip);
  }
  for (
    const ip of [
      "127.0.0.1",
      "127.1.2.3",
      "0.0.0.0",
      "255.255.255.255",
      "239.1.1.1",
      "::",
      "::1",
      "ff02::1",
      "::ffff:127.0.0.1",
    ]
  ) {
    assertEquals(isUsableRelayAddress(ip), false, ip);
  }
});

const spec = (over: Partial<AttemptSpec>): AttemptSpec => ({
  technique: "relay",
  role: "respond",
  id: "r",
  client: 1,
  srcIp: "10.0.2.2",
  srcPorts: [30000],
  dstIp: "172.16.1.2",
  dstPorts: [20000],
  timeoutMs: 5000,
  ...over,
});

Deno.test("a responder asked to allocate without a TURN server is refused before anything starts", () => {
  const relay = new Relay();
  assertThrows(() => relay.validate(spec({ extra: `relay1,${TOKEN},q` })), RangeError, "--turn");
  relay.validate(spec({ extra: `relay1,${TOKEN},q`, turn: { server: "172.16.0.1:3478" } }));
  assertThrows(() => relay.validate(spec({ srcPorts: [1, 2] })), RangeError, "exactly one");
});
