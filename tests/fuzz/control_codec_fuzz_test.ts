/**
 * Fuzz test of the control socket codec (src/control/codec.ts): 130,000
 * request and 100,000 reply inputs, generated, mutated and random, with fixed
 * seeds (in each test's name).
 *
 * What a user relies on: decodeRequest accepts exactly the documented grammar
 * (ports 1-65535 in plain decimal, addresses that formatIp prints back
 * identically, lines of at most 500 bytes) and answers anything else with a
 * RequestError carrying a reason and a usable ID; decodeReply accepts exactly
 * what encodeReply writes.
 */

import fc from "fast-check";
import { assert, assertEquals, assertStrictEquals } from "../assert.ts";
import { canonicalIp, formatIp, parseIp } from "../../ffi/ip.ts";
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  isValidData,
  isValidId,
  jsonField,
  MAX_MESSAGE_BYTES,
  PROTOCOLS,
  type Reply,
  type Request,
  RequestError,
  sanitizeReason,
  TECHNIQUES,
} from "../../src/control/codec.ts";
import {
  type AddressText,
  addressText,
  byteMutation,
  canonicalAddress,
  HOSTILE,
  hostileString,
  mutateAllBytes,
  mutateAllText,
  params,
  portList,
  textMutation,
  validPorts,
} from "./fuzz.ts";

const SEED = 0x8c0de;
const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const id = fc.stringMatching(/^[A-Za-z0-9_.:@+-]{1,64}$/).filter((s) => s !== "-");
const data = (max: number) => fc.stringMatching(new RegExp(`^[\\x21-\\x7b\\x7d\\x7e]{1,${max}}$`));
const technique = fc.constantFrom(...TECHNIQUES);

/** A valid request and one line that spells it (addresses possibly non-canonical). */
interface Case {
  request: Request;
  line: string;
}

const endpoints = fc.constantFrom(4 as const, 6 as const).chain((family) =>
  fc.record({
    src: addressText(family),
    srcPorts: portList,
    dst: addressText(family),
    dstPorts: portList,
  })
);

type Ends = { src: AddressText; srcPorts: number[]; dst: AddressText; dstPorts: number[] };
const endsFields = (e: Ends) =>
  `${e.src.text}|${e.srcPorts.join(",")}|${e.dst.text}|${e.dstPorts.join(",")}`;
const endsValue = (e: Ends) => ({
  srcIp: e.src.canonical,
  srcPorts: e.srcPorts,
  dstIp: e.dst.canonical,
  dstPorts: e.dstPorts,
});

const validCase: fc.Arbitrary<Case> = fc.oneof(
  fc.record({ id, technique, e: endpoints }).map(({ id, technique, e }) => ({
    request: { type: "initiate" as const, id, technique, ...endsValue(e) },
    line: `initiate|${id}|${technique}|${endsFields(e)}`,
  })),
  fc.record({ id, technique, e: endpoints, extra: data(400) }).map((
    { id, technique, e, extra },
  ) => ({
    request: { type: "respond" as const, id, technique, ...endsValue(e), extra },
    line: `respond|${id}|${technique}|${endsFields(e)}|${extra}`,
  })),
  fc.record({ id, data: data(480) }).map(({ id, data }) => ({
    request: { type: "peer" as const, id, data },
    line: `peer|${id}|${data}`,
  })),
  id.map((id) => ({ request: { type: "cancel" as const, id }, line: `cancel|${id}` })),
  fc.record({ id, type: fc.constantFrom("status" as const, "report" as const) }).map((
    { id, type },
  ) => ({ request: { type, id }, line: `${type}|${id}` })),
  fc.record({
    id,
    protocol: fc.constantFrom(...PROTOCOLS),
    src: fc.constantFrom(4 as const, 6 as const).chain(addressText),
    ports: portList,
  }).map(({ id, protocol, src, ports }) => ({
    request: {
      type: "endpoint" as const,
      id,
      protocol,
      srcIp: src.canonical,
      srcPorts: ports,
    },
    line: `endpoint|${id}|${protocol}|${src.text}|${ports.join(",")}`,
  })),
);

/** Fields of each request type that hold an address (the only ones allowed to differ in spelling). */
const ADDRESS_FIELDS: Record<Request["type"], number[]> = {
  initiate: [3, 5],
  respond: [3, 5],
  peer: [],
  cancel: [],
  endpoint: [3],
  status: [],
  report: [],
};

function assertCanonical(ip: string): void {
  assertStrictEquals(formatIp(parseIp(ip)), ip, `address ${ip} is not what formatIp prints`);
}

/** Everything a caller may assume about a decoded request. */
function assertValidRequest(r: Request): void {
  assert(isValidId(r.id), `bad id ${r.id}`);
  switch (r.type) {
    case "initiate":
    case "respond":
      assert((TECHNIQUES as readonly string[]).includes(r.technique));
      assertCanonical(r.srcIp);
      assertCanonical(r.dstIp);
      assertStrictEquals(r.srcIp.includes(":"), r.dstIp.includes(":"), "mixed families");
      assert(validPorts(r.srcPorts), `bad source ports ${r.srcPorts}`);
      assert(validPorts(r.dstPorts), `bad destination ports ${r.dstPorts}`);
      if (r.type === "respond") assert(isValidData(r.extra));
      return;
    case "peer":
      assert(isValidData(r.data));
      return;
    case "cancel":
    case "status":
    case "report":
      return;
    case "endpoint":
      assert((PROTOCOLS as readonly string[]).includes(r.protocol));
      assertCanonical(r.srcIp);
      assert(validPorts(r.srcPorts), `bad ports ${r.srcPorts}`);
      return;
  }
}

/**
 * decodeRequest on `bytes` either returns a request the line spells exactly
 * (up to address spelling and one trailing CR) or throws a RequestError whose
 * reason and ID make a valid error reply.
 */
function checkRequest(bytes: Uint8Array): void {
  let request: Request;
  try {
    request = decodeRequest(bytes);
  } catch (error) {
    if (!(error instanceof RequestError)) {
      throw new Error(`decodeRequest threw ${String(error)}, not RequestError`, { cause: error });
    }
    assert(error.message.trim() !== "", "RequestError without a reason");
    assert(error.id === "-" || isValidId(error.id), `unusable ID in error: ${error.id}`);
    if (error.id !== "-") {
      assertStrictEquals(error.id, strictUtf8.decode(bytes).replace(/\r$/, "").split("|")[1]);
    }
    if (error.cause !== undefined) {
      assert(
        error.cause instanceof TypeError || error.cause instanceof RangeError ||
          error.cause instanceof SyntaxError,
        `undocumented cause ${String(error.cause)}`,
      );
    }
    // The reason travels back intact as one error line.
    assertEquals(
      decodeReply(encodeReply({ type: "error", id: error.id, reason: error.message }).slice(0, -1)),
      {
        type: "error",
        id: error.id,
        reason: sanitizeReason(error.message),
      },
    );
    return;
  }
  assert(bytes.length <= MAX_MESSAGE_BYTES, `accepted a line of ${bytes.length} bytes`);
  assertValidRequest(request);
  const again = encodeRequest(request);
  assertEquals(decodeRequest(encoder.encode(again.slice(0, -1))), request);
  const text = strictUtf8.decode(bytes).replace(/\r$/, "");
  const fields = text.split("|");
  const expected = again.slice(0, -1).split("|");
  assertStrictEquals(fields.length, expected.length);
  fields.forEach((field, i) => {
    const want = expected[i];
    if (ADDRESS_FIELDS[request.type].includes(i)) assertStrictEquals(canonicalIp(field), want);
    else assertStrictEquals(field, want, `field ${i} "${field}" read as "${want}"`);
  });
}

Deno.test(`control fuzz: encodeRequest then decodeRequest round-trips 20,000 requests (seed ${SEED})`, () => {
  fc.assert(
    fc.property(validCase, ({ request }) => {
      const line = encodeRequest(request);
      assert(line.endsWith("\n") && line.indexOf("\n") === line.length - 1);
      const bytes = encoder.encode(line.slice(0, -1));
      if (bytes.length > MAX_MESSAGE_BYTES) {
        try {
          decodeRequest(bytes);
        } catch (error) {
          assert(error instanceof RequestError && error.message.includes("longer than"));
          return;
        }
        throw new Error("an over-long line was accepted");
      }
      assertEquals(decodeRequest(bytes), request);
    }),
    params(SEED, 20_000),
  );
});

Deno.test(`control fuzz: every accepted spelling of an address decodes to its canonical text, 20,000 requests (seed ${SEED + 1})`, () => {
  fc.assert(
    fc.property(validCase, fc.boolean(), ({ request, line }, cr) => {
      const bytes = encoder.encode(line + (cr ? "\r" : ""));
      if (bytes.length > MAX_MESSAGE_BYTES) return checkRequest(bytes);
      assertEquals(decodeRequest(bytes), request);
    }),
    params(SEED + 1, 20_000),
  );
});

Deno.test(`control fuzz: 40,000 requests with hostile fields and edits get a value or a RequestError (seed ${SEED + 2})`, () => {
  fc.assert(
    fc.property(
      validCase,
      fc.array(textMutation, { minLength: 1, maxLength: 4 }),
      fc.constantFrom("", "", "\r", "\r\n", "\n"),
      ({ line }, edits, tail) => checkRequest(encoder.encode(mutateAllText(line, edits) + tail)),
    ),
    params(SEED + 2, 40_000),
  );
});

Deno.test(`control fuzz: 20,000 requests with flipped, cut and grown bytes get a value or a RequestError (seed ${SEED + 3})`, () => {
  fc.assert(
    fc.property(
      validCase,
      fc.array(byteMutation, { minLength: 1, maxLength: 4 }),
      ({ line }, edits) => checkRequest(mutateAllBytes(encoder.encode(line), edits)),
    ),
    params(SEED + 3, 20_000),
  );
});

Deno.test(`control fuzz: 20,000 random lines get a value or a RequestError (seed ${SEED + 4})`, () => {
  const pieces = fc.oneof(
    fc.constantFrom(...HOSTILE, "|", "|", ",", "initiate|a|tcp-direct|", "cancel|", "peer|x|"),
    fc.string({ maxLength: 6, unit: "grapheme-ascii" }),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 600 }),
        fc.string({ maxLength: 520, unit: "binary" }).map((s) => encoder.encode(s)),
        fc.array(pieces, { maxLength: 12 }).map((p) => encoder.encode(p.join(""))),
      ),
      checkRequest,
    ),
    params(SEED + 4, 20_000),
  );
});

const replyArb: fc.Arbitrary<Reply> = fc.oneof(
  fc.record({ type: fc.constant("progress" as const), id, data: data(300) }),
  fc.record({ type: fc.constant("ok" as const), id }),
  fc.record({
    type: fc.constant("endpoint" as const),
    id,
    ip: canonicalAddress,
    ports: portList,
    source: data(20),
  }),
  fc.record({
    type: fc.constantFrom("status" as const, "report" as const),
    id,
    // Any JSON object value, as jsonField writes it (printable ASCII, | allowed).
    json: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), {
      maxKeys: 5,
    }).map((value) => jsonField(value)),
  }),
  fc.record({
    type: fc.constant("error" as const),
    id: fc.oneof(id, fc.constant("-")),
    reason: fc.oneof(
      hostileString,
      fc.string({ maxLength: 600, unit: "binary" }),
      fc.string({ minLength: 390, maxLength: 420, unit: "grapheme-ascii" }),
    ),
  }),
);

/** decodeReply either throws SyntaxError or returns the reply encodeReply writes back as `text`. */
function checkReply(text: string): void {
  let reply: Reply;
  try {
    reply = decodeReply(text);
  } catch (error) {
    assert(error instanceof SyntaxError, `decodeReply threw ${String(error)}, not SyntaxError`);
    assert(error.message.startsWith("Cannot parse reply"), error.message);
    return;
  }
  assert(isValidId(reply.id) || (reply.type === "error" && reply.id === "-"));
  const again = encodeReply(reply);
  assertEquals(decodeReply(again.slice(0, -1)), reply);
  if (reply.type === "endpoint") {
    assertCanonical(reply.ip);
    assert(validPorts(reply.ports));
    const fields = text.split("|");
    assertStrictEquals(canonicalIp(fields[2] ?? ""), reply.ip);
    fields[2] = reply.ip;
    assertStrictEquals(`${fields.join("|")}\n`, again);
  } else {
    assertStrictEquals(`${text}\n`, again, "a reply decoded to something else");
  }
}

Deno.test(`control fuzz: encodeReply then decodeReply round-trips 20,000 replies (seed ${SEED + 5})`, () => {
  fc.assert(
    fc.property(replyArb, (reply) => {
      const line = encodeReply(reply);
      assert(line.endsWith("\n") && line.indexOf("\n") === line.length - 1 && !line.includes("\r"));
      const expected = reply.type === "error"
        ? { ...reply, reason: sanitizeReason(reply.reason) }
        : reply;
      assertEquals(decodeReply(line.slice(0, -1)), expected);
    }),
    params(SEED + 5, 20_000),
  );
});

Deno.test(`control fuzz: 60,000 mutated and random reply lines get a reply or a SyntaxError (seed ${SEED + 6})`, () => {
  const validLine = replyArb.map((r) => encodeReply(r).slice(0, -1));
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.tuple(validLine, fc.array(textMutation, { minLength: 1, maxLength: 4 }))
            .map(([l, m]) => mutateAllText(l, m)),
        },
        { weight: 1, arbitrary: fc.string({ maxLength: 200, unit: "binary" }) },
      ),
      checkReply,
    ),
    params(SEED + 6, 60_000),
  );
});

const loosePorts = fc.array(
  fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constantFrom(0.5, NaN, Infinity, -0)),
  { maxLength: 18 },
);
const looseText = fc.oneof(hostileString, data(40), id);
const looseRequest: fc.Arbitrary<Request> = fc.oneof(
  fc.record({
    type: fc.constantFrom("initiate" as const, "respond" as const),
    id: looseText,
    technique: fc.oneof(technique, looseText) as fc.Arbitrary<typeof TECHNIQUES[number]>,
    srcIp: fc.oneof(canonicalAddress, looseText),
    srcPorts: fc.oneof(portList, loosePorts),
    dstIp: fc.oneof(canonicalAddress, looseText),
    dstPorts: fc.oneof(portList, loosePorts),
    extra: fc.oneof(data(500), looseText),
  }),
  fc.record({ type: fc.constant("peer" as const), id: looseText, data: looseText }),
  fc.record({ type: fc.constant("cancel" as const), id: looseText }),
  fc.record({
    type: fc.constant("endpoint" as const),
    id: looseText,
    protocol: fc.oneof(fc.constantFrom(...PROTOCOLS), looseText) as fc.Arbitrary<"tcp">,
    srcIp: fc.oneof(canonicalAddress, looseText),
    srcPorts: fc.oneof(portList, loosePorts),
  }),
);

Deno.test(`control fuzz: encodeRequest writes only lines decodeRequest reads, 10,000 loose requests (seed ${SEED + 7})`, () => {
  fc.assert(
    fc.property(looseRequest, (request) => {
      let line: string;
      try {
        line = encodeRequest(request);
      } catch (error) {
        assert(
          error instanceof TypeError && error.message.startsWith("Cannot encode"),
          String(error),
        );
        return;
      }
      const decoded = decodeRequest(encoder.encode(line.slice(0, -1)));
      assertValidRequest(decoded);
      const canonical = { ...request } as Record<string, unknown>;
      for (const key of ["srcIp", "dstIp"]) {
        if (typeof canonical[key] === "string") canonical[key] = canonicalIp(canonical[key]);
      }
      if (request.type === "initiate") delete canonical.extra;
      assertEquals(decoded, canonical);
    }),
    params(SEED + 7, 10_000),
  );
});

const looseReply: fc.Arbitrary<Reply> = fc.oneof(
  fc.record({ type: fc.constant("progress" as const), id: looseText, data: looseText }),
  fc.record({ type: fc.constant("ok" as const), id: looseText }),
  fc.record({
    type: fc.constant("endpoint" as const),
    id: looseText,
    ip: fc.oneof(canonicalAddress, looseText),
    ports: fc.oneof(portList, loosePorts),
    source: looseText,
  }),
  fc.record({ type: fc.constant("error" as const), id: looseText, reason: looseText }),
);

Deno.test(`control fuzz: encodeReply writes only lines decodeReply reads, 20,000 loose replies (seed ${SEED + 8})`, () => {
  fc.assert(
    fc.property(looseReply, (reply) => {
      let line: string;
      try {
        line = encodeReply(reply);
      } catch (error) {
        assert(
          error instanceof TypeError && error.message.startsWith("Cannot encode"),
          String(error),
        );
        return;
      }
      assert(line.endsWith("\n") && line.indexOf("\n") === line.length - 1);
      const expected = reply.type === "endpoint"
        ? { ...reply, ip: canonicalIp(reply.ip) }
        : reply.type === "error"
        ? { ...reply, reason: sanitizeReason(reply.reason) }
        : reply;
      assertEquals(decodeReply(line.slice(0, -1)), expected);
    }),
    params(SEED + 8, 20_000),
  );
});
