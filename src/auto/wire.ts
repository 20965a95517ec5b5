/**
 * The wire of `auto`: what the two punchds say to each other inside the
 * progress data the applications relay.
 *
 * ```
 * auto1i;p=tcp;t=tcp-direct.tcp-nutss;q=5000;l=10.0.1.2/24+fd00:1::2/64;m=pre;x=172.16.1.2;h=2;r=1
 * auto1r;...                 the responder's hello (same fields)
 * s<K>;<DATA>                progress DATA of step K's technique
 * f<K>                       step K ended on the sender's side without a connection
 * w<K>                       the initiator took step K's connection: the responder takes it too
 * ```
 * Hello fields: `p` protocol, `t` techniques the sender's application allows
 * (in its order, `.` separated), `q` the sender's local port, `l` its
 * interface addresses with prefix length (`+` separated, at most 4), `m` its
 * mapping (`none` no NAT, `pre` port preserving, `eim` one other port for every
 * destination, `seq` sequential, `rnd` random, `unk` unknown), `x` its public
 * address when known, `h` hops to leave its own NAT or firewall when known,
 * `r=1` when its daemon has a TURN server for the `relay` technique.
 *
 * The codec is pure and strict: a hello that does not parse is refused whole.
 *
 * @module
 */

import { canonicalIp, parsePort } from "../../ffi/ip.ts";
import { type Protocol, type TechniqueName, TECHNIQUES } from "../control/codec.ts";

/** How a side's NAT maps its flows, as far as it knows. */
export const MAPPINGS = ["none", "pre", "eim", "seq", "rnd", "unk"] as const;
/** A mapping behaviour. */
export type Mapping = typeof MAPPINGS[number];

/** At most this many local addresses travel in a hello. */
export const MAX_LOCALS = 4;

/** One local (interface) address and its prefix length. */
export interface LocalAddress {
  ip: string;
  prefixLength: number;
}

/** What one side knows about itself. */
export interface Hello {
  role: "initiate" | "respond";
  protocol: Protocol;
  /** Techniques the side's application allows, in its order. */
  techniques: TechniqueName[];
  /** The side's local port (SRC_PORT). */
  port: number;
  locals: LocalAddress[];
  mapping: Mapping;
  /** The public address the probe servers saw, when known. */
  publicIp?: string;
  /** Hops to leave the side's own NAT(s)/firewall(s), when known. */
  hops?: number;
  /** The side's daemon has a TURN server (`--turn`): it can allocate for `relay`. */
  relay?: boolean;
}

/** A message after the hellos. */
export type StepMessage =
  | { type: "step"; step: number; data: string }
  | { type: "ended"; step: number }
  | { type: "won"; step: number };

/** At most this many steps in a plan (step numbers are 0..MAX_STEPS-1). */
export const MAX_STEPS = 16;

/** Encodes a hello as progress data. */
export function encodeHello(hello: Hello): string {
  const fields = [
    `auto1${hello.role === "initiate" ? "i" : "r"}`,
    `p=${hello.protocol}`,
    `t=${hello.techniques.join(".")}`,
    `q=${hello.port}`,
  ];
  if (hello.locals.length > 0) {
    fields.push(`l=${hello.locals.map((l) => `${l.ip}/${l.prefixLength}`).join("+")}`);
  }
  fields.push(`m=${hello.mapping}`);
  if (hello.publicIp !== undefined) fields.push(`x=${hello.publicIp}`);
  if (hello.hops !== undefined) fields.push(`h=${hello.hops}`);
  if (hello.relay === true) fields.push("r=1");
  return fields.join(";");
}

/** True when `data` looks like a hello (of either role), whether or not it parses. */
export function isHello(data: string): boolean {
  return data.startsWith("auto1i;") || data.startsWith("auto1r;");
}

function parseNumber(text: string, max: number, what: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > max) {
    throw new SyntaxError(`bad ${what} "${text.slice(0, 12)}"`);
  }
  return Number(text);
}

function parseLocal(text: string): LocalAddress {
  const slash = text.lastIndexOf("/");
  if (slash < 0) throw new SyntaxError("bad local address (no prefix length)");
  let ip: string;
  try {
    ip = canonicalIp(text.slice(0, slash));
  } catch {
    throw new SyntaxError(`bad local address "${text.slice(0, 50)}"`);
  }
  const prefixLength = parseNumber(text.slice(slash + 1), ip.includes(":") ? 128 : 32, "prefix");
  return { ip, prefixLength };
}

/**
 * Decodes a hello. Throws SyntaxError (with a short reason) for anything but
 * a well-formed hello; unknown fields are refused too, so that a newer
 * version's hello is not half understood.
 */
export function decodeHello(data: string): Hello {
  const [tag, ...fields] = data.split(";");
  if (tag !== "auto1i" && tag !== "auto1r") throw new SyntaxError("not an auto hello");
  const values = new Map<string, string>();
  for (const field of fields) {
    const eq = field.indexOf("=");
    const key = field.slice(0, eq);
    if (eq < 1 || !"ptqlmxhr".includes(key) || key.length !== 1 || values.has(key)) {
      throw new SyntaxError(`bad hello field "${field.slice(0, 20)}"`);
    }
    values.set(key, field.slice(eq + 1));
  }
  const protocol = values.get("p");
  if (protocol !== "tcp" && protocol !== "udp") throw new SyntaxError("bad hello protocol");
  const names = (values.get("t") ?? "").split(".");
  if (names.length > MAX_STEPS) throw new SyntaxError("too many techniques in hello");
  const techniques = names.map((n) => {
    const name = TECHNIQUES.find((t) => t === n);
    if (name === undefined) throw new SyntaxError(`unknown technique "${n.slice(0, 20)}" in hello`);
    return name;
  });
  if (new Set(techniques).size !== techniques.length) {
    throw new SyntaxError("duplicate technique in hello");
  }
  let port: number;
  try {
    port = parsePort(values.get("q") ?? "");
  } catch {
    throw new SyntaxError("bad hello port");
  }
  const localText = values.get("l");
  const locals = localText === undefined ? [] : localText.split("+").map(parseLocal);
  if (locals.length > MAX_LOCALS) throw new SyntaxError("too many local addresses in hello");
  const mapping = MAPPINGS.find((m) => m === values.get("m"));
  if (mapping === undefined) throw new SyntaxError("bad hello mapping");
  const hello: Hello = {
    role: tag === "auto1i" ? "initiate" : "respond",
    protocol,
    techniques,
    port,
    locals,
    mapping,
  };
  const publicIp = values.get("x");
  if (publicIp !== undefined) {
    try {
      hello.publicIp = canonicalIp(publicIp);
    } catch {
      throw new SyntaxError("bad hello public address");
    }
  }
  const hops = values.get("h");
  if (hops !== undefined) hello.hops = parseNumber(hops, 64, "hop count");
  const relay = values.get("r");
  if (relay !== undefined && relay !== "1") throw new SyntaxError("bad hello relay flag");
  if (relay === "1") hello.relay = true;
  return hello;
}

/** Encodes a message after the hellos. */
export function encodeStepMessage(message: StepMessage): string {
  switch (message.type) {
    case "step":
      return `s${message.step};${message.data}`;
    case "ended":
      return `f${message.step}`;
    case "won":
      return `w${message.step}`;
  }
}

/** Decodes a message after the hellos; throws SyntaxError for anything else. */
export function decodeStepMessage(data: string): StepMessage {
  const match = data.match(/^([sfw])(0|[1-9][0-9]?)(;.*)?$/s);
  const step = Number(match?.[2]);
  if (match === null || step >= MAX_STEPS) throw new SyntaxError("not an auto step message");
  const kind = match[1];
  const rest = match[3];
  if (kind === "s") {
    const inner = rest?.slice(1) ?? "";
    if (inner === "") throw new SyntaxError("step message without data");
    return { type: "step", step, data: inner };
  }
  if (rest !== undefined) throw new SyntaxError("unexpected data in auto message");
  return { type: kind === "f" ? "ended" : "won", step };
}
