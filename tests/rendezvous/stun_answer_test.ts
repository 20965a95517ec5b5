import { assert, assertEquals, assertMatch } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  decode,
  decodeAddress,
  decodeErrorCode,
  decodeText,
  decodeXorAddress,
  encode,
  encodeChangeRequest,
  METHOD,
  newTransactionId,
  type StunMessage,
} from "../../src/stun/message.ts";
import {
  classicAnswer,
  isClassicBinding,
  SOFTWARE,
  stunAnswer,
} from "../../src/rendezvous/stun_answer.ts";
import { spawnServer } from "./spawn.ts";
import { isRoot, note, skipUnless } from "../helpers/skip.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";
import { runCommand } from "../../src/process.ts";

const FROM = inetAddress("198.51.100.7", 40123);
const LOCAL = inetAddress("203.0.113.1", 7001);

function request(attributes: StunMessage["attributes"] = [], method: number = METHOD.binding) {
  const message: StunMessage = {
    method,
    class: "request",
    transactionId: newTransactionId(),
    attributes,
  };
  return { message, bytes: encode(message) };
}

Deno.test("a Binding request gets XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE and FINGERPRINT", () => {
  const { message, bytes } = request();
  const answer = stunAnswer(bytes, FROM, LOCAL);
  assert(answer !== null);
  const { message: response } = decode(answer);
  assertEquals([response.class, response.method], ["success", METHOD.binding]);
  assertEquals(response.transactionId, message.transactionId);
  const xor = attribute(response, ATTR.XOR_MAPPED_ADDRESS);
  const plain = attribute(response, ATTR.MAPPED_ADDRESS);
  const origin = attribute(response, ATTR.RESPONSE_ORIGIN);
  assert(xor !== undefined && plain !== undefined && origin !== undefined);
  assertEquals(decodeXorAddress(xor, message.transactionId), FROM);
  assertEquals(decodeAddress(plain), FROM);
  assertEquals(decodeAddress(origin), LOCAL);
  assertEquals(decodeText(attribute(response, ATTR.SOFTWARE) ?? new Uint8Array()), SOFTWARE);
  assert(attribute(response, ATTR.FINGERPRINT) !== undefined);
});

Deno.test("an IPv6 client gets its IPv6 endpoint back", () => {
  const from = inetAddress("2001:db8::5", 5000);
  const { message, bytes } = request();
  const response =
    decode(stunAnswer(bytes, from, inetAddress("2001:db8::1", 7001)) ?? new Uint8Array()).message;
  assertEquals(
    decodeXorAddress(
      attribute(response, ATTR.XOR_MAPPED_ADDRESS) ?? new Uint8Array(),
      message.transactionId,
    ),
    from,
  );
});

const UNANSWERED: [string, Uint8Array][] = [
  [
    "an indication",
    encode({
      method: METHOD.binding,
      class: "indication",
      transactionId: newTransactionId(),
      attributes: [],
    }),
  ],
  [
    "a success response",
    encode({
      method: METHOD.binding,
      class: "success",
      transactionId: newTransactionId(),
      attributes: [],
    }),
  ],
  ["text", new TextEncoder().encode("observe                 ")],
  ["a truncated request", request().bytes.subarray(0, 19)],
];
for (const [what, bytes] of UNANSWERED) {
  Deno.test(`${what} gets no answer`, () => {
    assertEquals(stunAnswer(bytes, FROM, LOCAL), null);
  });
}

Deno.test("an unknown comprehension-required attribute gets 420 naming it; an optional one is ignored", () => {
  const { bytes } = request([
    { type: 0x7f01, value: new Uint8Array(4) },
    { type: 0xc001, value: new Uint8Array(4) },
  ]);
  const response = decode(stunAnswer(bytes, FROM, LOCAL) ?? new Uint8Array()).message;
  assertEquals(response.class, "error");
  assertEquals(decodeErrorCode(attribute(response, ATTR.ERROR_CODE) ?? new Uint8Array()).code, 420);
  assertEquals([...(attribute(response, ATTR.UNKNOWN_ATTRIBUTES) ?? [])], [0x7f, 0x01]);
});

Deno.test("CHANGE-REQUEST gets 420: this server offers no OTHER-ADDRESS (RFC 5780)", () => {
  const { bytes } = request([{
    type: ATTR.CHANGE_REQUEST,
    value: encodeChangeRequest({ ip: true, port: true }),
  }]);
  const response = decode(stunAnswer(bytes, FROM, LOCAL) ?? new Uint8Array()).message;
  assertEquals(decodeErrorCode(attribute(response, ATTR.ERROR_CODE) ?? new Uint8Array()).code, 420);
});

Deno.test("a request of another method (Allocate: this is no TURN server) gets 400", () => {
  const { bytes } = request([], METHOD.allocate);
  const response = decode(stunAnswer(bytes, FROM, LOCAL) ?? new Uint8Array()).message;
  assertEquals([response.class, response.method], ["error", METHOD.allocate]);
  assertEquals(decodeErrorCode(attribute(response, ATTR.ERROR_CODE) ?? new Uint8Array()).code, 400);
});

/** An RFC 3489 Binding request (no magic cookie), as Debian's `stun` sends it. */
function classic(changeFlags: number): Uint8Array {
  const bytes = new Uint8Array(28);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, 0x0001);
  view.setUint16(2, 8);
  crypto.getRandomValues(bytes.subarray(4, 20));
  bytes[4] = 0x55; // Not the magic cookie's first byte.
  view.setUint16(20, ATTR.CHANGE_REQUEST);
  view.setUint16(22, 4);
  view.setUint32(24, changeFlags);
  return bytes;
}

Deno.test("an RFC 3489 Binding request gets MAPPED-ADDRESS and SOURCE-ADDRESS with its 128-bit ID", () => {
  const bytes = classic(0);
  assert(isClassicBinding(bytes));
  const answer = classicAnswer(bytes, FROM, LOCAL);
  assert(answer !== null);
  const view = new DataView(answer.buffer);
  assertEquals(view.getUint16(0), 0x0101);
  assertEquals(answer.subarray(4, 20), bytes.subarray(4, 20));
  assertEquals(view.getUint16(20), ATTR.MAPPED_ADDRESS);
  assertEquals(decodeAddress(answer.subarray(24, 32)), FROM);
  assertEquals(view.getUint16(32), 0x0004);
  assertEquals(decodeAddress(answer.subarray(36, 44)), LOCAL);
  assertEquals(answer.length, 44);
});

Deno.test("an RFC 3489 request to answer from another address or port gets silence", () => {
  assertEquals(classicAnswer(classic(0x04), FROM, LOCAL), null);
  assertEquals(classicAnswer(classic(0x02), FROM, LOCAL), null);
});

Deno.test("an RFC 8489 request or a text line is no RFC 3489 request", () => {
  assertEquals(isClassicBinding(request().bytes), false);
  assertEquals(isClassicBinding(new TextEncoder().encode("register|alice|x")), false);
});

const hasStunClient = (() => {
  try {
    return Deno.statSync("/usr/bin/stun").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "Debian's stun client (RFC 3489) reads its mapped address from the rendezvous server's probe port",
  ignore: skipUnless(isRoot(), "stun client interop", "network namespaces need root") ||
    skipUnless(
      hasStunClient,
      "stun client interop",
      "no /usr/bin/stun (apt-get install stun-client)",
    ),
}, async () => {
  await withVoidNamespace("stun", async (ns) => {
    // The stun program knows only port 3478; in a namespace of its own, nothing else holds it.
    const server = await spawnServer(["--probe-port", "3478"], ["ip", "netns", "exec", ns]);
    try {
      const srcPort = 23456;
      const result = await runCommand("ip", [
        "netns",
        "exec",
        ns,
        "timeout",
        "10",
        "stun",
        "127.0.0.1",
        "1",
        "-v",
        "-p",
        String(srcPort),
      ]);
      const output = result.stdout + result.stderr;
      if (!/MappedAddress/.test(output)) note(output);
      assertMatch(output, new RegExp(`MappedAddress = 127\\.0\\.0\\.1:${srcPort}\\b`));
      assertMatch(output, /SourceAddress = 127\.0\.0\.1:3478\b/);
    } finally {
      await server.stop();
    }
  });
});
