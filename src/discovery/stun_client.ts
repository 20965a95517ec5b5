/**
 * STUN Binding transactions (RFC 8489) for endpoint discovery: over UDP with
 * retransmission, and over TCP with the stream framing of RFC 8489 §6.2.2.
 *
 * A response is matched by its 96-bit random transaction ID only, not by
 * its source: an RFC 5780 server answers a CHANGE-REQUEST from its other
 * address, and that answer arriving (or not) is the whole point of the
 * filtering test. An off-path host cannot guess the ID.
 *
 * ```
 *  UDP: request ──► (500 ms) ──► request ──► (1000 ms) ──► request ──► (1500 ms) ──► no answer
 *         any response with the transaction ID ends it; an error response throws StunError
 *  TCP: connect ─► request ─► read frames until one whole message ─► close
 * ```
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  decode,
  decodeAddress,
  decodeErrorCode,
  decodeXorAddress,
  encode,
  encodeChangeRequest,
  frameLength,
  METHOD,
  newTransactionId,
  type StunMessage,
} from "../stun/message.ts";

/** What a Binding response says. */
export interface BindingResult {
  /** The reflexive transport address: where the server saw the request come from. */
  mapped: InetAddress;
  /** RFC 5780 RESPONSE-ORIGIN: the server address the response left from, when given. */
  responseOrigin?: InetAddress;
  /** RFC 5780 OTHER-ADDRESS: the server's alternate address and port, when it has one. */
  otherAddress?: InetAddress;
}

/** A STUN error response (ERROR-CODE), or a response that makes no sense. */
export class StunError extends Error {
  /** The STUN error code (0 when the response was malformed). */
  readonly code: number;
  /** Builds the error. */
  constructor(code: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StunError";
    this.code = code;
  }
}

/** Options of a UDP Binding transaction. */
export interface UdpBindingOptions {
  /** RFC 5780 CHANGE-REQUEST: ask the server to answer from its other IP and/or port. */
  change?: { ip: boolean; port: boolean };
  /** Requests sent at most (default 3). */
  tries?: number;
  /** Wait after the first request, doubled after each (default 500 ms, RFC 8489's RTO). */
  rtoMs?: number;
}

/** Bytes of the biggest Binding response punchd reads. */
const MAX_RESPONSE = 1024;

/** The Binding request of `transactionId`, with CHANGE-REQUEST when asked. */
function bindingRequest(
  transactionId: Uint8Array,
  change?: { ip: boolean; port: boolean },
): Uint8Array<ArrayBuffer> {
  const message: StunMessage = {
    method: METHOD.binding,
    class: "request",
    transactionId,
    attributes: change === undefined
      ? []
      : [{ type: ATTR.CHANGE_REQUEST, value: encodeChangeRequest(change) }],
  };
  return new Uint8Array(encode(message, { fingerprint: true }));
}

/**
 * Reads a Binding response: success gives the mapped address (XOR-MAPPED-ADDRESS, else
 * MAPPED-ADDRESS from an RFC 3489 server), an error response throws StunError.
 */
export function bindingResult(message: StunMessage, server: InetAddress): BindingResult {
  const where = formatAddress(server);
  if (message.method !== METHOD.binding) {
    throw new StunError(0, `Cannot use the STUN answer of ${where}: not a Binding response`);
  }
  if (message.class === "error") {
    const value = attribute(message, ATTR.ERROR_CODE);
    const error = value === undefined
      ? { code: 0, reason: "no ERROR-CODE" }
      : decodeErrorCode(value);
    throw new StunError(
      error.code,
      `STUN server ${where} refused the Binding request: ${error.code} ${error.reason}`,
    );
  }
  if (message.class !== "success") {
    throw new StunError(0, `Cannot use the STUN answer of ${where}: not a response`);
  }
  const xor = attribute(message, ATTR.XOR_MAPPED_ADDRESS);
  const plain = attribute(message, ATTR.MAPPED_ADDRESS);
  let mapped: InetAddress;
  if (xor !== undefined) mapped = decodeXorAddress(xor, message.transactionId);
  else if (plain !== undefined) mapped = decodeAddress(plain);
  else {
    throw new StunError(0, `Cannot use the STUN answer of ${where}: no mapped address in it`);
  }
  const result: BindingResult = { mapped };
  const origin = attribute(message, ATTR.RESPONSE_ORIGIN);
  if (origin !== undefined) result.responseOrigin = decodeAddress(origin);
  const other = attribute(message, ATTR.OTHER_ADDRESS);
  if (other !== undefined) result.otherAddress = decodeAddress(other);
  return result;
}

function sameId(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * One Binding transaction from the UDP `socket` to `server`. Resolves with
 * the first response carrying the transaction ID (from any source, see the
 * module's note), null when no answer came after every retransmission;
 * throws StunError on an error response, the signal's reason when aborted.
 * Datagrams that are not that response are skipped.
 */
export async function bindingUdp(
  socket: Socket,
  server: InetAddress,
  signal: AbortSignal,
  options: UdpBindingOptions = {},
): Promise<BindingResult | null> {
  const transactionId = newTransactionId();
  const request = bindingRequest(transactionId, options.change);
  const buf = new Uint8Array(MAX_RESPONSE);
  let wait = options.rtoMs ?? 500;
  for (let attempt = 0; attempt < (options.tries ?? 3); attempt++, wait *= 2) {
    await socket.sendTo(request, server, signal);
    const window = AbortSignal.any([signal, AbortSignal.timeout(wait)]);
    try {
      for (;;) {
        const { length } = await socket.receiveFrom(buf, window);
        let message: StunMessage;
        try {
          message = decode(buf.subarray(0, length)).message;
        } catch {
          continue; // Not STUN, or damaged: not our answer.
        }
        if (message.class === "request" || message.class === "indication") continue;
        if (!sameId(message.transactionId, transactionId)) continue;
        return bindingResult(message, server);
      }
    } catch (error) {
      if (signal.aborted) throw error;
      if (error instanceof StunError) throw error;
      // This try's window ended: send again.
    }
  }
  return null;
}

/**
 * One Binding transaction on a connected TCP (stream) `socket`: writes the
 * request and reads until one whole STUN message arrived. Throws StunError
 * on an error response or a stream that is not STUN, and when the server
 * closes first.
 */
export async function bindingTcp(
  socket: Socket,
  server: InetAddress,
  signal: AbortSignal,
): Promise<BindingResult> {
  const transactionId = newTransactionId();
  await socket.write(bindingRequest(transactionId), signal);
  const buf = new Uint8Array(MAX_RESPONSE);
  let length = 0;
  for (;;) {
    let total: number | null;
    try {
      total = frameLength(buf.subarray(0, length));
    } catch (error) {
      throw new StunError(0, `Cannot read STUN over TCP from ${formatAddress(server)}: not STUN`, {
        cause: error,
      });
    }
    if (total !== null && total > MAX_RESPONSE) {
      throw new StunError(0, `Cannot read STUN over TCP from ${formatAddress(server)}: too long`);
    }
    if (total !== null && length >= total) {
      const { message } = decode(buf.subarray(0, total));
      if (!sameId(message.transactionId, transactionId)) {
        throw new StunError(0, `STUN server ${formatAddress(server)} answered another transaction`);
      }
      return bindingResult(message, server);
    }
    const n = await socket.read(buf.subarray(length), signal);
    if (n === 0) {
      throw new StunError(0, `STUN server ${formatAddress(server)} closed the connection first`);
    }
    length += n;
  }
}
