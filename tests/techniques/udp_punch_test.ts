import { assert, assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { udpDropProgram } from "../../src/packet/bpf.ts";
import {
  acceptPunch,
  decodePunch,
  encodePunch,
  isPunchShaped,
  type Punch,
  PUNCH_LENGTH,
  punchFields,
  PunchKey,
} from "../../src/techniques/udp_punch.ts";

const hex = (text: string) => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
const token = hex("000102030405060708090a0b0c0d0e0f");
const key = new PunchKey(token, "172.16.2.2");
const punch: Punch = {
  role: "R",
  seen: true,
  last: false,
  nonce: hex("1111111111111111"),
  echo: hex("2222222222222222"),
  count: 7,
};
/** The initiator receiving the responder's punches from 172.16.2.2:30000. */
const initiator = {
  key,
  role: "I" as const,
  peer: { ip: "172.16.2.2", ports: [30000], anyPort: false },
};
const peerAddress = inetAddress("172.16.2.2", 30000);

Deno.test("a punch round-trips through its 42 bytes", () => {
  const bytes = encodePunch(punch, key);
  assertEquals(bytes.length, PUNCH_LENGTH);
  assertEquals(decodePunch(bytes, key), punch);
  const unseen = { ...punch, role: "I" as const, seen: false, echo: new Uint8Array(8), count: 0 };
  assertEquals(decodePunch(encodePunch(unseen, key), key), unseen);
  const last = { ...punch, last: true, count: 9 };
  assertEquals(decodePunch(encodePunch(last, key), key), last);
});

Deno.test("a punch's fields sit where the wire description says, before the MAC", () => {
  const bytes = encodePunch({ ...punch, count: 0x01020304 }, key);
  assertEquals(
    Array.from(bytes.subarray(0, 26), (b) => b.toString(16).padStart(2, "0")).join(""),
    "50445532" + // "PDU2"
      "52" + // ROLE "R"
      "01" + // FLAGS: SEEN
      "1111111111111111" + // NONCE
      "2222222222222222" + // ECHO
      "01020304", // COUNT
  );
  const last = encodePunch({ ...punch, last: true, count: 0x01020304 }, key);
  assertEquals(last.subarray(0, 5), bytes.subarray(0, 5));
  assertEquals(last[5], 0x03); // FLAGS: SEEN and LAST
  assertEquals(last.subarray(6, 26), bytes.subarray(6, 26));
});

Deno.test("a LAST flag set or cleared on the wire makes the punch forged: FLAGS is under the MAC", () => {
  const seen = encodePunch(punch, key);
  const forgedLast = seen.slice();
  forgedLast[5] = 0x03;
  assert(isPunchShaped(forgedLast));
  assertEquals(decodePunch(forgedLast, key), "forged");
  assertEquals(acceptPunch(forgedLast, peerAddress, initiator), "forged");
  const last = encodePunch({ ...punch, last: true }, key);
  const cleared = last.slice();
  cleared[5] = 0x01;
  assertEquals(decodePunch(cleared, key), "forged");
  assertEquals(acceptPunch(last, peerAddress, initiator), { ...punch, last: true });
});

Deno.test("LAST only comes with SEEN: encoding refuses it alone, and such a datagram is not a punch", () => {
  assertThrows(
    () => encodePunch({ ...punch, seen: false, last: true, echo: new Uint8Array(8) }, key),
    RangeError,
    "LAST needs SEEN",
  );
  const bytes = encodePunch(punch, key);
  for (const flags of [0x02, 0x04, 0x05, 0x07, 0x80, 0xff]) {
    const odd = bytes.slice();
    odd[5] = flags;
    assert(!isPunchShaped(odd), `FLAGS ${flags}`);
    assertEquals(decodePunch(odd, key), "not a punch");
  }
  for (const flags of [0x00, 0x01, 0x03]) {
    const fine = bytes.slice();
    fine[5] = flags;
    assert(isPunchShaped(fine), `FLAGS ${flags}`);
  }
});

Deno.test("the MAC is HMAC-SHA256 over the label, the responder's address and the fields", async () => {
  const bytes = encodePunch(punch, key);
  const hmacKey = await crypto.subtle.importKey(
    "raw",
    token,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const label = new TextEncoder().encode("punchd udp PDU2\0");
  const message = new Uint8Array([...label, 4, 172, 16, 2, 2, ...bytes.subarray(0, 26)]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, message));
  assertEquals(bytes.subarray(26), mac.subarray(0, 16));
});

Deno.test("no punch carries the token, in bytes or in hex", () => {
  const tokenHex = new TextEncoder().encode("000102030405060708090a0b0c0d0e0f");
  for (let count = 0; count < 100; count++) {
    const bytes = encodePunch({ ...punch, count }, key);
    const text = Array.from(bytes).join(",");
    assert(!text.includes(Array.from(token).join(",")));
    assert(!text.includes(Array.from(tokenHex).join(",")));
  }
});

Deno.test("a punch under another token, or bound to another address, is forged", () => {
  const bytes = encodePunch(punch, key);
  const otherToken = new PunchKey(hex("ff0102030405060708090a0b0c0d0e0f"), "172.16.2.2");
  assertEquals(decodePunch(bytes, otherToken), "forged");
  assertEquals(decodePunch(bytes, new PunchKey(token, "172.16.2.3")), "forged");
  assertEquals(decodePunch(bytes, new PunchKey(token, "::ffff:172.16.2.2")), "forged");
});

Deno.test("changing any byte of a punch makes it forged or not a punch", () => {
  const bytes = encodePunch(punch, key);
  for (let i = 0; i < bytes.length; i++) {
    for (const bit of [0x01, 0x80]) {
      const tampered = bytes.slice();
      tampered[i] = (tampered[i] ?? 0) ^ bit;
      const got = decodePunch(tampered, key);
      assert(got === "forged" || got === "not a punch", `byte ${i} bit ${bit}: ${got}`);
      // The role byte flipped to the other role (I <-> R differ in several bits) is still forged.
    }
  }
  const otherRole = bytes.slice();
  otherRole[4] = 0x49;
  assertEquals(decodePunch(otherRole, key), "forged");
  const unseen = bytes.slice();
  unseen[5] = 0;
  assertEquals(decodePunch(unseen, key), "forged");
});

Deno.test("truncated, extended and foreign datagrams are not punches", () => {
  const bytes = encodePunch(punch, key);
  for (let n = 0; n < bytes.length; n++) {
    assertEquals(decodePunch(bytes.subarray(0, n), key), "not a punch");
  }
  assertEquals(decodePunch(new Uint8Array([...bytes, 0]), key), "not a punch");
  const v1 = new TextEncoder().encode(`PDU1|${"ab".repeat(16)}|R|1`);
  assertEquals(decodePunch(v1, key), "not a punch");
  const unknownFlag = bytes.slice();
  unknownFlag[5] = 0x05;
  assert(!isPunchShaped(unknownFlag));
  const badRole = bytes.slice();
  badRole[4] = 0x58;
  assert(!isPunchShaped(badRole));
  assert(isPunchShaped(bytes));
});

Deno.test("the peer's punch from the peer's address is accepted", () => {
  assertEquals(acceptPunch(encodePunch(punch, key), peerAddress, initiator), punch);
});

Deno.test("a captured punch replayed from another address is refused", () => {
  const bytes = encodePunch(punch, key);
  for (
    const from of [
      inetAddress("10.0.1.3", 30000),
      inetAddress("::ffff:172.16.2.2", 30000),
      { family: "unix" as const, path: "/x" },
    ]
  ) {
    assertEquals(acceptPunch(bytes, from, initiator), "wrong address");
  }
});

Deno.test("the peer's real punch from another port of its address is refused as 'wrong port'", () => {
  const from = inetAddress("172.16.2.2", 30001);
  assertEquals(acceptPunch(encodePunch(punch, key), from, initiator), "wrong port");
});

Deno.test("from another port of the peer's address, forged and reflected punches are 'wrong address'", () => {
  const from = inetAddress("172.16.2.2", 30001);
  const forged = encodePunch(
    punch,
    new PunchKey(crypto.getRandomValues(new Uint8Array(16)), "172.16.2.2"),
  );
  assertEquals(acceptPunch(forged, from, initiator), "wrong address");
  const own = encodePunch({ ...punch, role: "I" }, key);
  assertEquals(acceptPunch(own, from, initiator), "wrong address");
});

Deno.test("while birthday probing, any port of the peer's address is accepted, no other address", () => {
  const probing = { ...initiator, peer: { ...initiator.peer, anyPort: true } };
  const bytes = encodePunch(punch, key);
  assertEquals(acceptPunch(bytes, inetAddress("172.16.2.2", 41234), probing), punch);
  assertEquals(acceptPunch(bytes, inetAddress("10.0.1.3", 41234), probing), "wrong address");
});

Deno.test("a side's own punch reflected back from the peer's address is refused", () => {
  const own = encodePunch({ ...punch, role: "I" }, key);
  assertEquals(acceptPunch(own, peerAddress, initiator), "reflected");
});

Deno.test("a forged punch from the peer's address is refused", () => {
  const forged = encodePunch(
    punch,
    new PunchKey(crypto.getRandomValues(new Uint8Array(16)), "172.16.2.2"),
  );
  assertEquals(acceptPunch(forged, peerAddress, initiator), "forged");
});

Deno.test("a punch key needs 16 token bytes and an IP address", () => {
  assertThrows(() => new PunchKey(new Uint8Array(15), "1.2.3.4"), RangeError, "15 bytes");
  assertThrows(() => new PunchKey(token, "1.2.3"), SyntaxError, "Cannot parse IPv4 address");
});

Deno.test("encoding refuses nonces of the wrong size and counts out of range", () => {
  assertThrows(() => encodePunch({ ...punch, nonce: new Uint8Array(7) }, key), RangeError);
  assertThrows(() => encodePunch({ ...punch, count: 2 ** 32 }, key), RangeError, "count");
  assertThrows(() => encodePunch({ ...punch, count: -1 }, key), RangeError, "count");
});

Deno.test("a socket filter from punchFields drops exactly the peer's punches of this attempt", async () => {
  const receiver = Socket.create("inet", "datagram");
  const sender = Socket.create("inet", "datagram");
  try {
    receiver.bind(inetAddress("127.0.0.1", 0));
    sender.bind(inetAddress("127.0.0.1", 0));
    const to = receiver.localAddress();
    receiver.attachFilter(udpDropProgram(PUNCH_LENGTH, punchFields("R", punch.nonce)));
    const other = hex("3333333333333333");
    const sent: [string, Uint8Array<ArrayBuffer>][] = [
      ["the peer's punch", encodePunch(punch, key)],
      ["the peer's LAST", encodePunch({ ...punch, last: true, count: 8 }, key)],
      ["another nonce", encodePunch({ ...punch, nonce: other }, key)],
      ["our own role", encodePunch({ ...punch, role: "I" }, key)],
      ["one byte short", encodePunch(punch, key).slice(0, PUNCH_LENGTH - 1)],
      ["application data", new TextEncoder().encode("hello")],
      ["an empty keepalive", new Uint8Array(0)],
    ];
    for (const [, bytes] of sent) await sender.sendTo(bytes, to);
    const buf = new Uint8Array(128);
    const got: number[] = [];
    for (let i = 0; i < 5; i++) {
      const { length } = await receiver.receiveFrom(buf, AbortSignal.timeout(2000));
      got.push(length);
    }
    assertEquals(got, [PUNCH_LENGTH, PUNCH_LENGTH, PUNCH_LENGTH - 1, 5, 0]);
    // Nothing else is queued: both punches of the peer's were dropped.
    await assertRejects(() => receiver.receiveFrom(buf, AbortSignal.timeout(100)));
  } finally {
    receiver.close();
    sender.close();
  }
});

Deno.test("punchFields refuses a nonce of the wrong length", () => {
  assertThrows(() => punchFields("I", new Uint8Array(7)), RangeError, "8 bytes");
});
