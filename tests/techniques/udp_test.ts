import { assertEquals, assertThrows } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { Logger, type LogRecord } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { decodeOffer, encodeOffer, offerKey, Udp } from "../../src/techniques/udp.ts";
import { decodePunch, encodePunch, PunchKey } from "../../src/techniques/udp_punch.ts";
import { StrayLog, STRAYS_MESSAGE } from "../../src/techniques/udp_strays.ts";

const token = "00112233445566778899aabbccddeeff";

Deno.test("the initiator's offer round-trips with an IPv4 or IPv6 address", () => {
  for (const ip of ["172.16.2.2", "fd00:b2::2"]) {
    const offer = { token, mode: "h" as const, ip };
    assertEquals(decodeOffer(encodeOffer(offer)), offer);
  }
  assertEquals(encodeOffer({ token, mode: "e", ip: "1.2.3.4" }), `udp2:${token}:e:1.2.3.4`);
});

Deno.test("an offer from an older punchd, which sent the token in punches, is refused by name", () => {
  assertThrows(() => decodeOffer(`udp1:${token}:e`), SyntaxError, "older punchd");
});

Deno.test("malformed offers are refused", () => {
  for (
    const bad of [
      "",
      `udp2:${token}:e`,
      `udp2:${token}:x:1.2.3.4`,
      `udp2:${token.toUpperCase()}:e:1.2.3.4`,
      `udp2:${token}00:e:1.2.3.4`,
      `udp2:${token}:e:1.2.3`,
      `udp2:${token}:e:01.2.3.4`,
      `udp2:${token}:e:FD00::1`,
      `udp2:${token}:e:fd00:0::1`,
      `udp2:${token}:e:1.2.3.4:5`,
    ]
  ) {
    assertThrows(() => decodeOffer(bad), SyntaxError, 'udp expects EXTRA "udp2:TOKEN:MODE:IP"');
  }
});

Deno.test("both sides derive the same punch key from the offer", () => {
  const offer = { token, mode: "e" as const, ip: "172.16.2.2" };
  const punch = {
    role: "I" as const,
    seen: false,
    last: false,
    nonce: new Uint8Array(8).fill(1),
    echo: new Uint8Array(8),
    count: 0,
  };
  const bytes = encodePunch(punch, offerKey(offer));
  assertEquals(decodePunch(bytes, offerKey(decodeOffer(encodeOffer(offer)))), punch);
  const raw = Uint8Array.from(token.match(/../g) ?? [], (h) => parseInt(h, 16));
  assertEquals(decodePunch(bytes, new PunchKey(raw, "172.16.2.2")), punch);
});

Deno.test("a responder refuses an offer whose address family differs from SRC_IP's", () => {
  const spec: AttemptSpec = {
    role: "respond",
    id: "b0",
    technique: "udp",
    srcIp: "10.0.2.2",
    srcPorts: [30000],
    dstIp: "172.16.1.2",
    dstPorts: [20000],
    extra: `udp2:${token}:e:fd00:b2::2`,
    client: 1,
    timeoutMs: 1000,
  };
  assertThrows(() => new Udp().validate(spec), RangeError, "differ in family");
  new Udp().validate({ ...spec, extra: `udp2:${token}:e:172.16.2.2` });
});

Deno.test("a flood of refused datagrams writes one line per second with the count", () => {
  const records: LogRecord[] = [];
  let now = 0;
  const strays = new StrayLog(new Logger("debug", (r) => records.push(r)), 1000, () => now);
  const from = inetAddress("10.0.1.3", 40000);
  // 10,000 forged datagrams over 2.5 s.
  for (let i = 0; i < 10000; i++) {
    now = i / 4;
    strays.note(i % 2 === 0 ? "forged" : "wrong address", from);
  }
  strays.flush();
  assertEquals(records.map((r) => r.message), Array(4).fill(STRAYS_MESSAGE));
  assertEquals(records.map((r) => r.level), Array(4).fill("warn"));
  assertEquals(records.map((r) => Number(r.fields.count)), [1, 4000, 4000, 1999]);
  assertEquals(records[1]?.fields, {
    count: "4000",
    forged: "2000",
    wrong_address: "2000",
    last: "10.0.1.3:40000",
  });
});

Deno.test("nothing refused, nothing logged", () => {
  const records: LogRecord[] = [];
  new StrayLog(new Logger("debug", (r) => records.push(r))).flush();
  assertEquals(records, []);
});
