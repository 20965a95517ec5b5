/**
 * Shared pieces of the codec fuzz tests: hostile field values, mutations of
 * valid encodings (text and bytes), and generators of addresses (canonical
 * and in the other spellings parsers must accept) and port lists.
 *
 * Every fuzz test runs with a fixed seed (printed in its name) so a failure
 * reproduces exactly: fast-check prints the seed and the shrunk counterexample
 * path, e.g. `fc.assert(property, { seed: 8001, path: "12:3", numRuns: ... })`.
 *
 * @module
 */

import fc from "fast-check";
import { formatIp } from "../../ffi/ip.ts";

/** fast-check parameters for one property: fixed seed, no time-based behaviour. */
export function params(seed: number, numRuns: number): fc.Parameters<unknown> {
  return { seed, numRuns, endOnFailure: true };
}

/**
 * Field values that lenient parsers accept and punchd must not (or must read
 * exactly): number spellings `Number()` accepts, unicode digits, control
 * characters, separators, huge numbers, empty fields, odd addresses.
 */
export const HOSTILE: readonly string[] = [
  "",
  "0x10",
  "0X10",
  "0o7",
  "0b1",
  " 1",
  "1 ",
  "\t1",
  "1\n",
  "1e2",
  "1E2",
  "1.0",
  "0.5",
  ".5",
  "-0",
  "+1",
  "-1",
  "0",
  "00",
  "01",
  "065535",
  "65535",
  "65536",
  "99999",
  "4294967297",
  "9007199254740993",
  "9".repeat(400),
  "Infinity",
  "NaN",
  "1_000",
  "\u0661\u0662",
  "\uff11",
  "\u00b9",
  "\0",
  "1\0",
  "\r",
  "\n",
  "\r\n",
  "|",
  "||",
  ",",
  "1,",
  ",1",
  "1,,2",
  "1,1",
  "1, 2",
  "\u00a0",
  "\ufeff",
  "\ufeffcancel",
  "\u200b",
  "\u00e9",
  "\u{1f600}",
  "\ud800",
  "-",
  "a".repeat(65),
  "x".repeat(129),
  "x".repeat(901),
  "tcp",
  "udp",
  "TCP",
  "tcp-direct",
  "udp-birthday",
  "initiate",
  "respond",
  "cancel",
  "peer",
  "endpoint",
  "register",
  "publish",
  "query",
  "notify",
  "observe",
  "ping",
  "observed",
  "ok",
  "error",
  "progress",
  "pong",
  "0.0.0.0",
  "255.255.255.255",
  "1.2.3",
  "1.2.3.4.5",
  "01.2.3.4",
  "1.2.3.04",
  "256.1.1.1",
  "0x7f.0.0.1",
  "127.1",
  "1.2.3.4 ",
  "::",
  ":::",
  "::1",
  "0::1",
  "::FFFF:1.2.3.4",
  "::ffff:1.2.3.4",
  "1::2::3",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7::8",
  "12345::1",
  "fe80::1%eth0",
  "[::1]",
  "::1.2.3.4.5",
  "::256.1.1.1",
  "g::1",
  "0000:0000:0000:0000:0000:0000:0000:0001",
];

/** One edit of a text encoding; positions are taken modulo the text's length. */
export type TextMutation =
  | { kind: "field"; index: number; value: string }
  | { kind: "insert"; at: number; value: string }
  | { kind: "delete"; at: number; length: number }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate-field"; index: number }
  | { kind: "swap-fields"; a: number; b: number }
  | { kind: "char"; at: number; value: string };

/** A hostile value, a random short string (any code points) or a random ASCII string. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8, unit: "binary" }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8, unit: "grapheme-ascii" }) },
  { weight: 1, arbitrary: fc.integer().map(String) },
);

/** Edits of `|`-separated text. */
export const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ kind: fc.constant("field" as const), index: fc.nat(9), value: hostileString }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), value: hostileString }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), length: fc.nat(12) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("duplicate-field" as const), index: fc.nat(9) }),
  fc.record({ kind: fc.constant("swap-fields" as const), a: fc.nat(9), b: fc.nat(9) }),
  fc.record({
    kind: fc.constant("char" as const),
    at: fc.nat(),
    value: fc.constantFrom("|", ",", ".", ":", "\r", "\n", "\0", " ", "0", "9", "a", "\u00e9"),
  }),
);

/** Applies one edit to `text`. */
export function mutateText(text: string, m: TextMutation): string {
  const fields = text.split("|");
  const at = (n: number) => text.length === 0 ? 0 : n % (text.length + 1);
  switch (m.kind) {
    case "field":
      fields[m.index % fields.length] = m.value;
      return fields.join("|");
    case "insert":
      return text.slice(0, at(m.at)) + m.value + text.slice(at(m.at));
    case "delete":
      return text.slice(0, at(m.at)) + text.slice(at(m.at) + m.length);
    case "truncate":
      return text.slice(0, at(m.at));
    case "duplicate-field": {
      const i = m.index % fields.length;
      fields.splice(i, 0, fields[i] ?? "");
      return fields.join("|");
    }
    case "swap-fields": {
      const a = m.a % fields.length, b = m.b % fields.length;
      [fields[a], fields[b]] = [fields[b] ?? "", fields[a] ?? ""];
      return fields.join("|");
    }
    case "char":
      return text.slice(0, at(m.at)) + m.value + text.slice(at(m.at) + 1);
  }
}

/** One edit of a binary encoding; positions are taken modulo the length. */
export type ByteMutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "set16"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "extend"; bytes: Uint8Array }
  | { kind: "insert"; at: number; bytes: Uint8Array };

/** Edits of bytes: bit flips, byte and 16-bit field substitutions (extremes favoured), cuts, growth. */
export const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("set" as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(0, 1, 0x7f, 0x80, 0xff), fc.nat(255)),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("set16" as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(0, 1, 7, 8, 19, 20, 40, 0x7fff, 0xffff), fc.nat(0xffff)),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("extend" as const),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("insert" as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
    }),
  },
);

/** Applies one edit to a copy of `bytes`. */
export function mutateBytes(bytes: Uint8Array, m: ByteMutation): Uint8Array {
  const at = (n: number) => bytes.length === 0 ? 0 : n % bytes.length;
  switch (m.kind) {
    case "flip": {
      const out = bytes.slice();
      if (out.length > 0) out[at(m.at)]! ^= 1 << m.bit;
      return out;
    }
    case "set": {
      const out = bytes.slice();
      if (out.length > 0) out[at(m.at)] = m.value;
      return out;
    }
    case "set16": {
      const out = bytes.slice();
      if (out.length > 1) {
        const i = at(m.at) & ~1;
        out[i] = m.value >> 8;
        out[i + 1] = m.value & 0xff;
      }
      return out;
    }
    case "truncate":
      return bytes.slice(0, bytes.length === 0 ? 0 : m.at % (bytes.length + 1));
    case "extend": {
      const out = new Uint8Array(bytes.length + m.bytes.length);
      out.set(bytes);
      out.set(m.bytes, bytes.length);
      return out;
    }
    case "insert": {
      const i = bytes.length === 0 ? 0 : m.at % (bytes.length + 1);
      const out = new Uint8Array(bytes.length + m.bytes.length);
      out.set(bytes.subarray(0, i));
      out.set(m.bytes, i);
      out.set(bytes.subarray(i), i + m.bytes.length);
      return out;
    }
  }
}

/** Applies edits in order. */
export function mutateAllBytes(bytes: Uint8Array, ms: readonly ByteMutation[]): Uint8Array {
  return ms.reduce(mutateBytes, bytes);
}

/** Applies edits in order. */
export function mutateAllText(text: string, ms: readonly TextMutation[]): string {
  return ms.reduce(mutateText, text);
}

/** 4 address bytes. */
export const ipv4Bytes: fc.Arbitrary<Uint8Array> = fc.uint8Array({ minLength: 4, maxLength: 4 });

/** 16 address bytes with runs of zero words (so "::" compression is exercised). */
export const ipv6Bytes: fc.Arbitrary<Uint8Array> = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.nat(0xffff)), {
    minLength: 8,
    maxLength: 8,
  })
  .map((words) => {
    const out = new Uint8Array(16);
    words.forEach((w, i) => {
      out[2 * i] = w >> 8;
      out[2 * i + 1] = w & 0xff;
    });
    return out;
  });

/** Ways to write the same IPv6 address that RFC 4291 allows and the parser must accept. */
function ipv6Spellings(bytes: Uint8Array): string[] {
  const canonical = formatIp(bytes);
  const words = Array.from(
    { length: 8 },
    (_, i) => ((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0),
  );
  const full = words.map((w) => w.toString(16).padStart(4, "0")).join(":");
  const dotted = `${words.slice(0, 6).map((w) => w.toString(16)).join(":")}:${
    Array.from(bytes.subarray(12)).join(".")
  }`;
  return [canonical, canonical.toUpperCase(), full, full.toUpperCase(), dotted];
}

/** An address: its canonical text (what decoders must return) and a text that spells it. */
export interface AddressText {
  canonical: string;
  text: string;
  family: 4 | 6;
}

/** An address of the given family, spelled canonically or in another accepted form. */
export function addressText(family: 4 | 6): fc.Arbitrary<AddressText> {
  if (family === 4) {
    return ipv4Bytes.map((b) => ({
      canonical: formatIp(b),
      text: formatIp(b),
      family: 4 as const,
    }));
  }
  return fc.tuple(ipv6Bytes, fc.nat(4)).map(([b, i]) => ({
    canonical: formatIp(b),
    text: ipv6Spellings(b)[i] ?? formatIp(b),
    family: 6 as const,
  }));
}

/** A canonical address text of either family. */
export const canonicalAddress: fc.Arbitrary<string> = fc.oneof(ipv4Bytes, ipv6Bytes).map(formatIp);

/** A list of 1..16 distinct ports 1..65535, extremes favoured. */
export const portList: fc.Arbitrary<number[]> = fc.uniqueArray(
  fc.oneof(fc.constantFrom(1, 2, 65534, 65535), fc.integer({ min: 1, max: 65535 })),
  { minLength: 1, maxLength: 16 },
);

/** True when `ports` are 1..16 distinct integers in 1..65535. */
export function validPorts(ports: readonly number[]): boolean {
  return ports.length >= 1 && ports.length <= 16 && new Set(ports).size === ports.length &&
    ports.every((p) => Number.isInteger(p) && p >= 1 && p <= 65535);
}
