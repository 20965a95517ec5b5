/**
 * Strict text codecs for IPv4 and IPv6 addresses and for port numbers.
 *
 * `Number()` accepts "0x10", " 1" and "1e2"; these parsers accept only the
 * canonical digits, so what the control socket, the CLI and the sockaddr codec
 * accept is exactly the same set.
 *
 * @module
 */

/** An IP address in binary form: 4 bytes (IPv4) or 16 bytes (IPv6). */
export type IpBytes = Uint8Array;

const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses a port 1..65535 written in plain decimal digits; throws otherwise. */
export function parsePort(text: string, { allowZero = false } = {}): number {
  if (!DECIMAL.test(text)) {
    throw new SyntaxError(`Cannot parse port "${text}": not a decimal number`);
  }
  const port = Number(text);
  if (port > 65535 || (port === 0 && !allowZero)) {
    throw new RangeError(`Cannot use port ${text}: out of range ${allowZero ? 0 : 1}..65535`);
  }
  return port;
}

/** Parses dotted-quad IPv4 ("192.0.2.1"); leading zeros are refused. */
export function parseIpv4(text: string): IpBytes {
  const parts = text.split(".");
  if (parts.length !== 4) throw new SyntaxError(`Cannot parse IPv4 address "${text}"`);
  const out = new Uint8Array(4);
  parts.forEach((part, i) => {
    if (!DECIMAL.test(part) || part.length > 3 || Number(part) > 255) {
      throw new SyntaxError(`Cannot parse IPv4 address "${text}"`);
    }
    out[i] = Number(part);
  });
  return out;
}

/** Parses an IPv6 address (RFC 4291 text, with "::" and a trailing dotted quad). */
export function parseIpv6(text: string): IpBytes {
  const fail = () => new SyntaxError(`Cannot parse IPv6 address "${text}"`);
  if (text.length === 0 || text.length > 45) throw fail();
  let head = text;
  let tail4: IpBytes | undefined;
  const lastColon = text.lastIndexOf(":");
  if (lastColon >= 0 && text.slice(lastColon + 1).includes(".")) {
    try {
      tail4 = parseIpv4(text.slice(lastColon + 1));
    } catch {
      throw fail();
    }
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) throw fail();
  const groups = (half: string): number[] => {
    if (half === "") return [];
    return half.split(":").map((g) => {
      if (!HEX_GROUP.test(g)) throw fail();
      return parseInt(g, 16);
    });
  };
  const left = groups(halves[0] ?? "");
  const right = halves.length === 2 ? groups(halves[1] ?? "") : [];
  const words: number[] = [];
  if (halves.length === 2) {
    if (left.length + right.length > 7) throw fail();
    words.push(...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right);
  } else {
    if (left.length !== 8) throw fail();
    words.push(...left);
  }
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  if (tail4) out.set(tail4, 12);
  return out;
}

/** Parses an IPv4 or IPv6 address. */
export function parseIp(text: string): IpBytes {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

/** Formats 4 or 16 address bytes as canonical text (RFC 5952 for IPv6). */
export function formatIp(bytes: IpBytes): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw new TypeError(`Cannot format IP address of ${bytes.length} bytes`);
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // Longest run of two or more zero words becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

/** Canonical text of an address given as text, e.g. "::FFFF:1.2.3.4" -> "::ffff:102:304". */
export function canonicalIp(text: string): string {
  return formatIp(parseIp(text));
}
