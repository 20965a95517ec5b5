/**
 * Fuzz test of the STUN codec (src/stun/message.ts) and of the rendezvous
 * server's STUN answers (src/rendezvous/stun_answer.ts), with fixed seeds
 * (in each test's name).
 *
 * What a user relies on: any bytes from the network either decode or are
 * refused with a SyntaxError (never another exception, never a hang); what
 * encode writes decodes to the same message; the server answers only
 * well-formed Binding requests and never throws.
 */

import fc from "fast-check";
import { assert, assertEquals } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import {
  decode,
  encode,
  METHOD,
  type StunAttribute,
  type StunClass,
  type StunMessage,
  verifyIntegrity,
} from "../../src/stun/message.ts";
import { classicAnswer, stunAnswer } from "../../src/rendezvous/stun_answer.ts";
import { byteMutation, mutateAllBytes, params } from "./fuzz.ts";

const klass = fc.constantFrom<StunClass>("request", "indication", "success", "error");
const attributeArb: fc.Arbitrary<StunAttribute> = fc.record({
  // FINGERPRINT and MESSAGE-INTEGRITY are added by options, not as plain attributes.
  type: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== 0x8028 && t !== 0x0008),
  value: fc.uint8Array({ maxLength: 64 }),
});
const messageArb: fc.Arbitrary<StunMessage> = fc.record({
  method: fc.integer({ min: 0, max: 0xfff }),
  class: klass,
  transactionId: fc.uint8Array({ minLength: 12, maxLength: 12 }),
  attributes: fc.array(attributeArb, { maxLength: 8 }),
});
const optionsArb = fc.record({
  integrity: fc.option(fc.uint8Array({ minLength: 1, maxLength: 32 }), { nil: undefined }),
  fingerprint: fc.boolean(),
});

function decodesOrSyntaxError(bytes: Uint8Array): void {
  try {
    decode(bytes);
  } catch (error) {
    assert(error instanceof SyntaxError, `not a SyntaxError: ${error}`);
  }
}

const FROM = inetAddress("198.51.100.7", 40000);
const LOCAL = inetAddress("203.0.113.1", 3478);

Deno.test("decode(encode(message)) is the message, with integrity and fingerprint (seed 5769, 20,000 runs)", () => {
  fc.assert(
    fc.property(messageArb, optionsArb, (message, options) => {
      const bytes = encode(message, {
        ...(options.integrity === undefined ? {} : { integrityKey: options.integrity }),
        fingerprint: options.fingerprint,
      });
      const { message: back, length } = decode(bytes);
      assertEquals(length, bytes.length);
      assertEquals([back.method, back.class], [message.method, message.class]);
      assertEquals(back.transactionId, message.transactionId);
      assertEquals(back.attributes.slice(0, message.attributes.length), message.attributes);
      if (options.integrity !== undefined) assert(verifyIntegrity(bytes, options.integrity));
    }),
    params(5769, 20_000),
  );
});

Deno.test("mutated messages decode or are a SyntaxError (seed 8489, 50,000 runs)", () => {
  fc.assert(
    fc.property(
      messageArb,
      fc.array(byteMutation, { minLength: 1, maxLength: 4 }),
      (message, mutations) => {
        decodesOrSyntaxError(mutateAllBytes(encode(message, { fingerprint: true }), mutations));
      },
    ),
    params(8489, 50_000),
  );
});

Deno.test("random bytes decode or are a SyntaxError (seed 3489, 50,000 runs)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      // A STUN-looking header makes the body reachable more often.
      if (bytes.length >= 8 && bytes[0] !== undefined && bytes[0] % 2 === 0) {
        bytes[0] &= 0x3f;
        bytes.set([0x21, 0x12, 0xa4, 0x42], 4);
      }
      decodesOrSyntaxError(bytes);
    }),
    params(3489, 50_000),
  );
});

Deno.test("the rendezvous server answers any input without throwing, and only Binding requests with success (seed 5780, 30,000 runs)", () => {
  fc.assert(
    fc.property(
      messageArb,
      fc.array(byteMutation, { maxLength: 3 }),
      (message, mutations) => {
        const bytes = mutateAllBytes(encode(message), mutations);
        const answer = stunAnswer(bytes, FROM, LOCAL);
        classicAnswer(bytes, FROM, LOCAL);
        if (answer === null) return;
        const response = decode(answer).message;
        assert(response.class === "success" || response.class === "error");
        if (response.class === "success") assertEquals(response.method, METHOD.binding);
      },
    ),
    params(5780, 30_000),
  );
});
