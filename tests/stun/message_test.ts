import { assert, assertEquals, assertThrows } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  crc32,
  decode,
  decodeAddress,
  decodeChangeRequest,
  decodeErrorCode,
  decodeText,
  decodeXorAddress,
  encode,
  encodeAddress,
  encodeChangeRequest,
  encodedLength,
  encodeErrorCode,
  encodeText,
  encodeXorAddress,
  frameLength,
  longTermKey,
  looksLikeStun,
  METHOD,
  newTransactionId,
  opaqueString,
  type StunMessage,
  verifyIntegrity,
} from "../../src/stun/message.ts";

/** Hex with comments (`#` to the end of a line) to bytes. */
function hex(text: string): Uint8Array {
  const digits = text.replace(/#.*$/gm, "").replace(/\s+/g, "");
  return new Uint8Array(digits.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}

const utf8 = (text: string) => new TextEncoder().encode(text);

// RFC 5769 §2.1: a sample request (short-term credentials).
const REQUEST = hex(`
  00 01 00 58   # Binding request, length 88
  21 12 a4 42   # magic cookie
  b7 e7 a7 01 bc 34 d6 86 fa 87 df ae   # transaction ID
  80 22 00 10   # SOFTWARE, 16 bytes
  53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74   # "STUN test client"
  00 24 00 04   # PRIORITY
  6e 00 01 ff
  80 29 00 08   # ICE-CONTROLLED
  93 2f f9 b1 51 26 3b 36
  00 06 00 09   # USERNAME, 9 bytes
  65 76 74 6a 3a 68 36 76 59 20 20 20   # "evtj:h6vY" and 3 bytes of padding (spaces)
  00 08 00 14   # MESSAGE-INTEGRITY
  9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
  80 28 00 04   # FINGERPRINT
  e5 7a 3b cf
`);
const SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt";

// RFC 5769 §2.2: a sample IPv4 response.
const RESPONSE_V4 = hex(`
  01 01 00 3c   # Binding success response, length 60
  21 12 a4 42   # magic cookie
  b7 e7 a7 01 bc 34 d6 86 fa 87 df ae   # transaction ID
  80 22 00 0b   # SOFTWARE, 11 bytes
  74 65 73 74 20 76 65 63 74 6f 72 20   # "test vector" and a padding space
  00 20 00 08   # XOR-MAPPED-ADDRESS
  00 01 a1 47   # IPv4, port 32853 XOR 0x2112
  e1 12 a6 43   # 192.0.2.1 XOR the magic cookie
  00 08 00 14   # MESSAGE-INTEGRITY
  2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
  80 28 00 04   # FINGERPRINT
  c0 7d 4c 96
`);

// RFC 5769 §2.3: a sample IPv6 response.
const RESPONSE_V6 = hex(`
  01 01 00 48   # Binding success response, length 72
  21 12 a4 42   # magic cookie
  b7 e7 a7 01 bc 34 d6 86 fa 87 df ae   # transaction ID
  80 22 00 0b   # SOFTWARE, 11 bytes
  74 65 73 74 20 76 65 63 74 6f 72 20   # "test vector" and a padding space
  00 20 00 14   # XOR-MAPPED-ADDRESS
  00 02 a1 47   # IPv6, port 32853 XOR 0x2112
  01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9   # 2001:db8:1234:5678:11:2233:4455:6677, XORed
  00 08 00 14   # MESSAGE-INTEGRITY
  a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
  80 28 00 04   # FINGERPRINT
  c8 fb 0b 4c
`);

// RFC 5769 §2.4: a sample request with long-term authentication.
const LONG_TERM = hex(`
  00 01 00 60   # Binding request, length 96
  21 12 a4 42   # magic cookie
  78 ad 34 33 c6 ad 72 c0 29 da 41 2e   # transaction ID
  00 06 00 12   # USERNAME, 18 bytes: U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9
  e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
  00 15 00 1c   # NONCE, 28 bytes
  66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
  00 14 00 0b   # REALM, 11 bytes: "example.org" and a padding byte
  65 78 61 6d 70 6c 65 2e 6f 72 67 00
  00 08 00 14   # MESSAGE-INTEGRITY
  f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66
`);

Deno.test("RFC 5769 2.1: the sample request decodes; integrity and fingerprint check out", () => {
  const { message, length } = decode(REQUEST);
  assertEquals(length, REQUEST.length);
  assertEquals([message.class, message.method], ["request", METHOD.binding]);
  assertEquals(
    decodeText(attribute(message, ATTR.SOFTWARE) ?? new Uint8Array()),
    "STUN test client",
  );
  assertEquals(decodeText(attribute(message, ATTR.USERNAME) ?? new Uint8Array()), "evtj:h6vY");
  assertEquals(verifyIntegrity(REQUEST, utf8(SHORT_TERM_PASSWORD)), true);
  assertEquals(verifyIntegrity(message, utf8(SHORT_TERM_PASSWORD)), true);
  assertEquals(verifyIntegrity(REQUEST, utf8("wrong")), false);
});

Deno.test("RFC 5769 2.2: the IPv4 response gives 192.0.2.1:32853 and re-encodes byte for byte", () => {
  const { message } = decode(RESPONSE_V4);
  const mapped = attribute(message, ATTR.XOR_MAPPED_ADDRESS) ?? new Uint8Array();
  assertEquals(decodeXorAddress(mapped, message.transactionId), inetAddress("192.0.2.1", 32853));
  assertEquals(verifyIntegrity(RESPONSE_V4, utf8(SHORT_TERM_PASSWORD)), true);
  // Our padding is zeros where the vector has a space: only the SOFTWARE padding differs, so
  // encode the vector's own value with the space, as 12 bytes, and compare the rest.
  const again = encode({
    ...message,
    attributes: [
      { type: ATTR.SOFTWARE, value: utf8("test vector") },
      {
        type: ATTR.XOR_MAPPED_ADDRESS,
        value: encodeXorAddress(inetAddress("192.0.2.1", 32853), message.transactionId),
      },
    ],
  }, { integrityKey: utf8(SHORT_TERM_PASSWORD), fingerprint: true });
  // Header and SOFTWARE up to its padding byte (index 35), then XOR-MAPPED-ADDRESS.
  assertEquals(again.subarray(0, 35), RESPONSE_V4.subarray(0, 35));
  assertEquals(again.subarray(36, 48), RESPONSE_V4.subarray(36, 48));
  assertEquals(decode(again).message.attributes.slice(0, 2), message.attributes.slice(0, 2));
});

Deno.test("RFC 5769 2.3: the IPv6 response gives [2001:db8:1234:5678:11:2233:4455:6677]:32853", () => {
  const { message } = decode(RESPONSE_V6);
  const mapped = attribute(message, ATTR.XOR_MAPPED_ADDRESS) ?? new Uint8Array();
  assertEquals(
    decodeXorAddress(mapped, message.transactionId),
    inetAddress("2001:db8:1234:5678:11:2233:4455:6677", 32853),
  );
  assertEquals(verifyIntegrity(RESPONSE_V6, utf8(SHORT_TERM_PASSWORD)), true);
  assertEquals(
    encodeXorAddress(
      inetAddress("2001:db8:1234:5678:11:2233:4455:6677", 32853),
      message.transactionId,
    ),
    mapped,
  );
});

Deno.test("RFC 5769 2.4: long-term credentials with a SASLprep'd password check out", () => {
  const { message } = decode(LONG_TERM);
  const username = decodeText(attribute(message, ATTR.USERNAME) ?? new Uint8Array());
  const realm = decodeText(attribute(message, ATTR.REALM) ?? new Uint8Array());
  assertEquals(username, "\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9");
  assertEquals(realm, "example.org");
  assertEquals(opaqueString("The\u00ADM\u00AAtr\u2168"), "TheMatrIX");
  assertEquals(
    verifyIntegrity(LONG_TERM, longTermKey(username, realm, "The\u00ADM\u00AAtr\u2168")),
    true,
  );
  assertEquals(verifyIntegrity(LONG_TERM, longTermKey(username, realm, "TheMatrix")), false);
});

Deno.test("every truncation of a vector is a SyntaxError, never another error", () => {
  for (const vector of [REQUEST, RESPONSE_V4, RESPONSE_V6, LONG_TERM]) {
    for (let n = 0; n < vector.length; n++) {
      assertThrows(() => decode(vector.subarray(0, n)), SyntaxError);
    }
  }
});

Deno.test("a changed byte is caught by FINGERPRINT; a wrong MESSAGE-INTEGRITY by its check", () => {
  const damaged = REQUEST.slice();
  damaged[30] = (damaged[30] ?? 0) ^ 1; // Inside SOFTWARE.
  assertThrows(() => decode(damaged), SyntaxError, "wrong FINGERPRINT");
  const noFingerprint = LONG_TERM.slice();
  noFingerprint[30] = (noFingerprint[30] ?? 0) ^ 1; // Inside USERNAME.
  assertEquals(verifyIntegrity(noFingerprint, utf8("x")), false);
});

Deno.test("messages round-trip through encode and decode, with integrity and fingerprint", () => {
  const message: StunMessage = {
    method: METHOD.connectionBind,
    class: "success",
    transactionId: newTransactionId(),
    attributes: [
      { type: ATTR.CONNECTION_ID, value: new Uint8Array([0, 0, 0, 7]) },
      { type: ATTR.REALM, value: encodeText("odd-length") },
    ],
  };
  const key = longTermKey("u", "r", "p");
  const bytes = encode(message, { integrityKey: key, fingerprint: true });
  assertEquals(bytes.length, encodedLength(message, { integrityKey: key, fingerprint: true }));
  assertEquals(frameLength(bytes), bytes.length);
  assertEquals(looksLikeStun(bytes), true);
  const { message: back } = decode(bytes);
  assertEquals(back.method, message.method);
  assertEquals(back.class, message.class);
  assertEquals(back.attributes.slice(0, 2), message.attributes);
  assertEquals(verifyIntegrity(bytes, key), true);
  for (const klass of ["request", "indication", "success", "error"] as const) {
    for (const method of [0x001, 0x00b, 0xfff]) {
      const m = { ...message, class: klass, method, attributes: [] };
      const d = decode(encode(m)).message;
      assertEquals([d.class, d.method], [klass, method]);
    }
  }
});

Deno.test("attribute values: addresses, XOR addresses, error codes, CHANGE-REQUEST", () => {
  const id = newTransactionId();
  for (const address of [inetAddress("203.0.113.5", 1), inetAddress("2001:db8::1", 65535)]) {
    assertEquals(decodeAddress(encodeAddress(address)), address);
    assertEquals(decodeXorAddress(encodeXorAddress(address, id), id), address);
  }
  assertEquals(decodeErrorCode(encodeErrorCode(438, "Stale Nonce")), {
    code: 438,
    reason: "Stale Nonce",
  });
  assertThrows(() => encodeErrorCode(200, "no"), RangeError);
  assertThrows(() => decodeAddress(new Uint8Array([0, 3, 0, 1, 1, 2, 3, 4])), SyntaxError);
  for (
    const change of [{ ip: true, port: false }, { ip: false, port: true }, { ip: true, port: true }]
  ) {
    assertEquals(decodeChangeRequest(encodeChangeRequest(change)), change);
  }
  assertThrows(() => decodeText(new Uint8Array([0xff])), SyntaxError);
});

Deno.test("CRC-32 is zlib's", () => {
  assertEquals(crc32(utf8("123456789")), 0xcbf43926);
});

Deno.test("headers that are not STUN are refused", () => {
  assertThrows(() => decode(utf8("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), SyntaxError);
  assertThrows(() => frameLength(utf8("observed|1.2.3.4|5\n  ")), SyntaxError);
  assertEquals(frameLength(new Uint8Array(19)), null);
  assert(!looksLikeStun(utf8("observe")));
});
