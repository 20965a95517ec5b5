/**
 * The control socket's wire codec: one message per line, at most 500 bytes
 * before the `\n`, fields separated by `|`, port lists comma separated.
 *
 * Requests (application to punchd):
 * ```
 * initiate|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS
 * respond|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS|EXTRA
 * peer|ID|DATA
 * cancel|ID
 * endpoint|ID|PROTOCOL|SRC_IP|SRC_PORTS
 * status|ID                 the daemon's state and counters
 * report|ID                 what the host's NAT does (runs discovery; takes seconds)
 * ```
 * Replies (punchd to application):
 * ```
 * progress|ID|DATA          forward DATA to the peer (it becomes EXTRA or a peer message)
 * ok|ID                     sent in one sendmsg with the connected socket (SCM_RIGHTS)
 * ok|ID|TECHNIQUE|MS        the same, for `auto` and list requests: which technique won, after how long
 * ok|ID|relay|MS|via=IP:PORT  the same for a relayed connection (also for a single `relay`
 *                           request): through which TURN server
 * endpoint|ID|IP|PORTS|HOW  the endpoint to publish for a coming attempt
 * endpoint|ID|IP|PORTS|HOW|NAT  the same with the NAT's RFC 5780 behaviour (UDP, with a STUN
 *                           server that has OTHER-ADDRESS): MAPPING,FILTERING, e.g. `eim,apdf`
 * status|ID|JSON            the status (src/control/status.ts DaemonStatus), one line
 * report|ID|JSON            the NAT report (NatReport), one line
 * error|ID|REASON           ID is "-" when the request had no usable ID
 * ```
 * JSON fields are printable ASCII (other characters escaped) of at most
 * MAX_JSON_REPLY_BYTES; they may contain `|`, so they are always the last field.
 * TECHNIQUE is one technique name, `auto` (TCP), `auto-udp`, or an ordered
 * comma separated list of techniques of one protocol (`tcp-syni,tcp-nutss`).
 *
 * The codec is pure: it validates a whole message and returns a value or
 * throws SyntaxError/RangeError with a short reason fit for `error|ID|...`.
 *
 * @module
 */

import { canonicalIp, parsePort } from "../../ffi/ip.ts";

/** Maximum message length in bytes, not counting the terminating `\n`. */
export const MAX_MESSAGE_BYTES = 500;
/** Maximum length of a status or report reply's JSON. */
export const MAX_JSON_REPLY_BYTES = 16384;
/** Maximum number of ports in one list. */
export const MAX_PORTS = 16;
/** Maximum length of an attempt ID. */
export const MAX_ID_LENGTH = 64;

/** Technique names the daemon knows. */
export const TECHNIQUES = [
  "tcp-direct",
  "tcp-nutss",
  "tcp-syni",
  "tcp-prime",
  "udp",
  "udp-birthday",
  "udp-prime",
  "relay",
] as const;
/** A technique name. */
export type TechniqueName = typeof TECHNIQUES[number];

/** What `auto` tries when the application names no list, per protocol. */
export const AUTO_TECHNIQUES = {
  tcp: ["tcp-direct", "tcp-nutss", "tcp-syni", "tcp-prime", "relay"],
  udp: ["udp", "udp-prime"],
} as const satisfies Record<string, readonly TechniqueName[]>;
/** At most this many techniques in one list. */
export const MAX_LIST_TECHNIQUES = 8;

/** The TECHNIQUE field: one technique, `auto`, `auto-udp`, or an ordered list (`a,b`). */
export type TechniqueChoice = TechniqueName | "auto" | "auto-udp" | `${TechniqueName},${string}`;

/** A TECHNIQUE field taken apart: one technique, or a plan for `auto`. */
export type ParsedChoice =
  | { kind: "single"; technique: TechniqueName }
  | {
    kind: "auto";
    protocol: Protocol;
    /** Techniques in the application's order. */
    techniques: TechniqueName[];
    /** True when the application named them (a list), false for `auto`/`auto-udp`. */
    explicit: boolean;
  };

/** The transport protocol of a technique. */
export function techniqueProtocol(name: TechniqueName): Protocol {
  return name.startsWith("udp") ? "udp" : "tcp";
}

/** Parses a TECHNIQUE field; throws RangeError/SyntaxError with a client-facing reason. */
export function parseChoice(text: string): ParsedChoice {
  if (text === "auto") {
    return { kind: "auto", protocol: "tcp", techniques: [...AUTO_TECHNIQUES.tcp], explicit: false };
  }
  if (text === "auto-udp") {
    return { kind: "auto", protocol: "udp", techniques: [...AUTO_TECHNIQUES.udp], explicit: false };
  }
  if (!text.includes(",")) return { kind: "single", technique: technique(text) };
  const parts = text.split(",");
  if (parts.length > MAX_LIST_TECHNIQUES) {
    throw new RangeError(`too many techniques in list (at most ${MAX_LIST_TECHNIQUES})`);
  }
  const techniques = parts.map((p) => {
    if (p === "") throw new SyntaxError("empty entry in technique list");
    return technique(p);
  });
  if (new Set(techniques).size !== techniques.length) {
    throw new SyntaxError("duplicate technique in list");
  }
  const protocol = techniqueProtocol(techniques[0] ?? "tcp-direct");
  if (techniques.some((t) => techniqueProtocol(t) !== protocol)) {
    throw new SyntaxError("technique list mixes TCP and UDP techniques");
  }
  return { kind: "auto", protocol, techniques, explicit: true };
}

/** Transport protocols for endpoint discovery. */
export const PROTOCOLS = ["tcp", "udp"] as const;
/** A transport protocol. */
export type Protocol = typeof PROTOCOLS[number];

/** Addresses and ports of one side pair of an attempt. */
export interface Endpoints {
  /** Local address to bind (canonical text). */
  srcIp: string;
  srcPorts: number[];
  /** The peer's address (canonical text). */
  dstIp: string;
  dstPorts: number[];
}

/** `initiate|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS` */
export interface InitiateRequest extends Endpoints {
  type: "initiate";
  id: string;
  technique: TechniqueChoice;
}

/** `respond|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS|EXTRA` */
export interface RespondRequest extends Endpoints {
  type: "respond";
  id: string;
  technique: TechniqueChoice;
  /** The initiator's progress data, as the application received it. */
  extra: string;
}

/** `peer|ID|DATA`: later progress data from the peer for a running attempt. */
export interface PeerRequest {
  type: "peer";
  id: string;
  data: string;
}

/** `cancel|ID` */
export interface CancelRequest {
  type: "cancel";
  id: string;
}

/** `endpoint|ID|PROTOCOL|SRC_IP|SRC_PORTS` */
export interface EndpointRequest {
  type: "endpoint";
  id: string;
  protocol: Protocol;
  srcIp: string;
  srcPorts: number[];
}

/** `status|ID` or `report|ID`: questions about the daemon and the host's NAT. */
export interface InfoRequest {
  type: "status" | "report";
  id: string;
}

/** Any request. */
export type Request =
  | InitiateRequest
  | RespondRequest
  | PeerRequest
  | CancelRequest
  | EndpointRequest
  | InfoRequest;

/** Any reply. */
export type Reply =
  | { type: "progress"; id: string; data: string }
  | { type: "ok"; id: string; technique?: TechniqueName; ms?: number; via?: string }
  | { type: "endpoint"; id: string; ip: string; ports: number[]; source: string; nat?: string }
  | { type: "error"; id: string; reason: string }
  | { type: "status" | "report"; id: string; json: string };

/** The NAT field of an endpoint reply: RFC 5780 mapping and filtering behaviour. */
const NAT_BEHAVIOR = /^(eim|adm|apdm),(eif|adf|apdf)$/;

/** A request that could not be decoded, with the ID when one was readable. */
export class RequestError extends Error {
  /** The request's ID, or "-" when it had none that could be used. */
  readonly id: string;
  /** Builds the error; `reason` becomes the reply's REASON. */
  constructor(id: string, reason: string, options?: ErrorOptions) {
    super(reason, options);
    this.name = "RequestError";
    this.id = id;
  }
}

const ID_PATTERN = /^[A-Za-z0-9_.:@+-]{1,64}$/;
/** Opaque data: printable ASCII except `|`. */
const DATA_PATTERN = /^[\x21-\x7b\x7d\x7e]+$/;
const FIELD_COUNTS: Record<Request["type"], number> = {
  initiate: 7,
  respond: 8,
  peer: 3,
  cancel: 2,
  endpoint: 5,
  status: 2,
  report: 2,
};

/** True when `id` is a valid attempt ID ("-" is not: error replies use it for "no ID"). */
export function isValidId(id: string): boolean {
  return id !== "-" && ID_PATTERN.test(id);
}

/** True when `data` may travel as an opaque field (progress data, EXTRA, reasons). */
export function isValidData(data: string): boolean {
  return DATA_PATTERN.test(data);
}

/** Parses a non-empty comma separated port list without duplicates. */
export function parsePorts(text: string): number[] {
  if (text === "") throw new SyntaxError("empty port list");
  const parts = text.split(",");
  if (parts.length > MAX_PORTS) throw new RangeError(`too many ports (at most ${MAX_PORTS})`);
  const ports = parts.map((p) => {
    if (p === "") throw new SyntaxError("empty entry in port list");
    try {
      return parsePort(p);
    } catch {
      throw new RangeError(`bad port "${p}" (1..65535)`);
    }
  });
  if (new Set(ports).size !== ports.length) throw new SyntaxError("duplicate port in list");
  return ports;
}

function parseAddress(text: string, what: string): string {
  try {
    return canonicalIp(text);
  } catch {
    throw new SyntaxError(`bad ${what} address "${text.slice(0, 60)}"`);
  }
}

/**
 * Decodes one request line (without its `\n`). Throws RequestError whose
 * message is the reason to send back and whose `id` is the ID to use.
 */
export function decodeRequest(line: Uint8Array): Request {
  if (line.byteLength > MAX_MESSAGE_BYTES) {
    throw new RequestError("-", `message longer than ${MAX_MESSAGE_BYTES} bytes`);
  }
  let text: string;
  try {
    // ignoreBOM: a leading U+FEFF stays in the text (and fails), it is not silently dropped.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(line);
  } catch {
    throw new RequestError("-", "message is not valid UTF-8");
  }
  if (text.endsWith("\r")) text = text.slice(0, -1);
  const fields = text.split("|");
  const rawId = fields[1];
  const id = rawId !== undefined && isValidId(rawId) ? rawId : "-";
  const type = fields[0] ?? "";
  if (!Object.hasOwn(FIELD_COUNTS, type)) {
    throw new RequestError(id, `unknown message type "${type.slice(0, 20)}"`);
  }
  const t = type as Request["type"];
  const expected = FIELD_COUNTS[t];
  if (fields.length !== expected) {
    throw new RequestError(id, `${t} takes ${expected} fields, got ${fields.length}`);
  }
  if (id === "-") throw new RequestError("-", "bad ID (1-64 of A-Z a-z 0-9 _ . : @ + -)");
  try {
    return decodeFields(t, id, fields);
  } catch (error) {
    if (error instanceof RequestError) throw error;
    throw new RequestError(id, (error as Error).message, { cause: error });
  }
}

function technique(text: string): TechniqueName {
  const name = TECHNIQUES.find((t) => t === text);
  if (name === undefined) throw new RangeError(`unknown technique "${text.slice(0, 30)}"`);
  return name;
}

function choice(text: string): TechniqueChoice {
  parseChoice(text);
  return text as TechniqueChoice;
}

function endpoints(fields: string[]): Endpoints {
  const [, , , srcIp = "", srcPorts = "", dstIp = "", dstPorts = ""] = fields;
  const src = parseAddress(srcIp, "source");
  const dst = parseAddress(dstIp, "destination");
  if (src.includes(":") !== dst.includes(":")) {
    throw new TypeError("source and destination addresses are of different families");
  }
  return { srcIp: src, srcPorts: parsePorts(srcPorts), dstIp: dst, dstPorts: parsePorts(dstPorts) };
}

function decodeFields(type: Request["type"], id: string, fields: string[]): Request {
  switch (type) {
    case "initiate":
      return { type, id, technique: choice(fields[2] ?? ""), ...endpoints(fields) };
    case "respond": {
      const extra = fields[7] ?? "";
      if (!isValidData(extra)) {
        throw new SyntaxError("bad EXTRA (printable ASCII without |, not empty)");
      }
      return { type, id, technique: choice(fields[2] ?? ""), ...endpoints(fields), extra };
    }
    case "peer": {
      const data = fields[2] ?? "";
      if (!isValidData(data)) {
        throw new SyntaxError("bad DATA (printable ASCII without |, not empty)");
      }
      return { type, id, data };
    }
    case "cancel":
    case "status":
    case "report":
      return { type, id };
    case "endpoint": {
      const protocol = PROTOCOLS.find((p) => p === fields[2]);
      if (protocol === undefined) {
        throw new RangeError(`unknown protocol "${(fields[2] ?? "").slice(0, 20)}"`);
      }
      return {
        type,
        id,
        protocol,
        srcIp: parseAddress(fields[3] ?? "", "source"),
        srcPorts: parsePorts(fields[4] ?? ""),
      };
    }
  }
}

/** Makes any text safe as a reason field: no `|`, no control characters, bounded. */
export function sanitizeReason(text: string): string {
  // Everything outside printable ASCII (control characters included) and "|" goes.
  const clean = text.replace(
    /[^\x20-\x7b\x7d\x7e]/g,
    (c) => c === "|" || c < " " || c === "\x7f" ? " " : "?",
  ).slice(0, 400).trim();
  return clean === "" ? "unknown error" : clean;
}

/**
 * Encodes a reply as one line with its `\n`. Throws TypeError for a reply
 * decodeReply would refuse (bad ID, DATA, address, ports or HOW).
 */
export function encodeReply(reply: Reply): string {
  const line = replyLine(reply);
  try {
    decodeReply(line.slice(0, -1));
  } catch (error) {
    throw new TypeError(`Cannot encode ${reply.type} reply: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return line;
}

function replyLine(reply: Reply): string {
  switch (reply.type) {
    case "progress":
      if (!isValidData(reply.data)) throw new TypeError("Cannot encode progress: bad data");
      return `progress|${reply.id}|${reply.data}\n`;
    case "ok":
      if (reply.technique !== undefined) {
        const line = `ok|${reply.id}|${reply.technique}|${Math.round(reply.ms ?? 0)}`;
        if (reply.via === undefined) return `${line}\n`;
        if (!isValidData(reply.via)) throw new TypeError("Cannot encode ok: bad via");
        return `${line}|via=${reply.via}\n`;
      }
      return `ok|${reply.id}\n`;
    case "endpoint": {
      const line = `endpoint|${reply.id}|${reply.ip}|${reply.ports.join(",")}|${reply.source}`;
      if (reply.nat === undefined) return `${line}\n`;
      if (!NAT_BEHAVIOR.test(reply.nat)) throw new TypeError("Cannot encode endpoint: bad NAT");
      return `${line}|${reply.nat}\n`;
    }
    case "error":
      return `error|${reply.id}|${sanitizeReason(reply.reason)}\n`;
    case "status":
    case "report":
      return `${reply.type}|${reply.id}|${reply.json}\n`;
  }
}

/** Encodes a value as a status/report JSON field: one line of printable ASCII. */
export function jsonField(value: unknown): string {
  const json = JSON.stringify(value).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  if (json.length > MAX_JSON_REPLY_BYTES) {
    throw new RangeError(`reply longer than ${MAX_JSON_REPLY_BYTES} bytes`);
  }
  return json;
}

/**
 * Encodes a request as one line with its `\n` (used by clients). Throws
 * TypeError for a request decodeRequest would refuse, with its reason.
 */
export function encodeRequest(request: Request): string {
  const line = requestLine(request);
  try {
    decodeRequest(new TextEncoder().encode(line.slice(0, -1)));
  } catch (error) {
    throw new TypeError(`Cannot encode ${request.type} request: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return line;
}

function requestLine(request: Request): string {
  switch (request.type) {
    case "initiate":
      return `initiate|${request.id}|${request.technique}|${request.srcIp}|${
        request.srcPorts.join(",")
      }|${request.dstIp}|${request.dstPorts.join(",")}\n`;
    case "respond":
      return `respond|${request.id}|${request.technique}|${request.srcIp}|${
        request.srcPorts.join(",")
      }|${request.dstIp}|${request.dstPorts.join(",")}|${request.extra}\n`;
    case "peer":
      return `peer|${request.id}|${request.data}\n`;
    case "cancel":
    case "status":
    case "report":
      return `${request.type}|${request.id}\n`;
    case "endpoint":
      return `endpoint|${request.id}|${request.protocol}|${request.srcIp}|${
        request.srcPorts.join(",")
      }\n`;
  }
}

/**
 * Decodes a reply line (without `\n`), for clients: exactly what encodeReply
 * writes (addresses in any spelling, returned canonical). Throws SyntaxError
 * on anything else.
 */
export function decodeReply(text: string): Reply {
  try {
    return decodeReplyFields(text.split("|"));
  } catch (error) {
    throw new SyntaxError(
      `Cannot parse reply "${sanitizeReason(text.slice(0, 80))}": ${(error as Error).message}`,
      { cause: error },
    );
  }
}

function decodeReplyFields(fields: string[]): Reply {
  const [type, id = ""] = fields;
  if (!isValidId(id) && !(type === "error" && id === "-")) throw new SyntaxError("bad ID");
  if (type === "ok" && fields.length === 2) return { type, id };
  if (type === "ok" && (fields.length === 4 || fields.length === 5)) {
    const ms = fields[3] ?? "";
    if (!/^(0|[1-9][0-9]{0,8})$/.test(ms)) throw new SyntaxError("bad MS");
    const reply: Reply = { type, id, technique: technique(fields[2] ?? ""), ms: Number(ms) };
    const via = fields[4];
    if (via !== undefined) {
      if (!/^via=\S+$/.test(via) || !isValidData(via)) throw new SyntaxError("bad via");
      reply.via = via.slice(4);
    }
    return reply;
  }
  if (type === "progress" && fields.length === 3) {
    const data = fields[2] ?? "";
    if (!isValidData(data)) throw new SyntaxError("bad DATA");
    return { type, id, data };
  }
  if (type === "error" && fields.length === 3) {
    const reason = fields[2] ?? "";
    if (sanitizeReason(reason) !== reason) throw new SyntaxError("bad REASON");
    return { type, id, reason };
  }
  if (type === "endpoint" && (fields.length === 5 || fields.length === 6)) {
    const source = fields[4] ?? "";
    if (!isValidData(source)) throw new SyntaxError("bad HOW");
    const nat = fields[5];
    if (nat !== undefined && !NAT_BEHAVIOR.test(nat)) throw new SyntaxError("bad NAT");
    return {
      type,
      id,
      ip: parseAddress(fields[2] ?? "", "endpoint"),
      ports: parsePorts(fields[3] ?? ""),
      source,
      ...(nat === undefined ? {} : { nat }),
    };
  }
  if ((type === "status" || type === "report") && fields.length >= 3) {
    const json = fields.slice(2).join("|");
    if (json.length > MAX_JSON_REPLY_BYTES) throw new SyntaxError("JSON too long");
    if (!/^[\x20-\x7e]+$/.test(json)) throw new SyntaxError("JSON not printable ASCII");
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch {
      throw new SyntaxError("bad JSON");
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new SyntaxError("JSON is not an object");
    }
    return { type, id, json };
  }
  throw new SyntaxError("unknown reply type or wrong number of fields");
}
