/**
 * The UDP side of the rendezvous server (see `codec.ts` for the protocol):
 * names registered by endpoint, keepalives, connects that tell both sides
 * each other's endpoint, and STUN Binding answers (`stun_answer.ts`) on the
 * probe ports and the main port (a datagram that starts like STUN is STUN).
 * Each source address gets at most {@linkcode STUN_PER_SECOND} STUN answers
 * a second (burst {@linkcode STUN_BURST}), so a forged source makes the
 * server a weak reflector at most.
 *
 * Each socket is read one datagram per reactor turn, and replies never wait
 * for room in the socket buffer (a full buffer drops them, as the network
 * could), so a datagram flood slows nobody's TCP.
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import { formatAddress, type SocketAddress } from "../../ffi/structs.ts";
import * as sys from "../../ffi/syscalls.ts";
import type { Logger } from "../log.ts";
import { isCredential, isPeerId, observedLine } from "./codec.ts";
import type { CredentialPolicy } from "./credentials.ts";
import { addressKey, type Clock, sleep, TokenBucket } from "./limits.ts";
import { looksLikeStun } from "../stun/message.ts";
import { classicAnswer, isClassicBinding, stunAnswer } from "./stun_answer.ts";
import type { UdpNames } from "./udp_names.ts";

const encoder = new TextEncoder();

/** STUN answers per second to one source address (discovery sends a few per request). */
export const STUN_PER_SECOND = 200;
/** ... and the burst. */
export const STUN_BURST = 400;
/** Source addresses whose STUN rate is tracked at once (the oldest is forgotten first). */
const STUN_SOURCES = 4096;

function endpointText(address: SocketAddress): string {
  return address.family === "unix" ? "-|-" : `${address.address}|${address.port}`;
}

/** What the UDP side needs from the server. */
export interface UdpServiceOptions {
  names: UdpNames;
  policy: CredentialPolicy;
  clock: Clock;
  log: Logger;
}

/** Answers the UDP requests of the rendezvous server. */
export class UdpService {
  readonly #names: UdpNames;
  readonly #policy: CredentialPolicy;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stunRates = new Map<string, TokenBucket>();

  /** A service over the server's name table and registration policy. */
  constructor(options: UdpServiceOptions) {
    this.#names = options.names;
    this.#policy = options.policy;
    this.#clock = options.clock;
    this.#log = options.log;
  }

  /** Answers datagrams on `socket` until `signal` aborts: the UDP protocol on the main port, `observed` on probe ports. */
  async serve(socket: Socket, main: boolean, signal: AbortSignal): Promise<void> {
    const buf = new Uint8Array(1500);
    const decoder = new TextDecoder();
    while (!signal.aborted) {
      let from: SocketAddress;
      let length: number;
      try {
        // One datagram per reactor turn, as for TCP connections.
        await socket.readable(signal);
        ({ from, length } = await socket.receiveFrom(buf, signal));
      } catch (error) {
        if (signal.aborted) return;
        this.#log.warn("udp receive failed", { error: (error as Error).message });
        await sleep(10, signal);
        continue;
      }
      // STUN on every port; the main port also speaks the text protocol, probe ports nothing else.
      const datagram = buf.subarray(0, length);
      let replies: { to: SocketAddress; bytes: Uint8Array }[] = [];
      if (looksLikeStun(datagram) || isClassicBinding(datagram)) {
        const answer = this.#stun(socket, datagram, from);
        if (answer !== null) replies = [{ to: from, bytes: answer }];
      } else if (main) {
        replies = this.request(decoder.decode(datagram.subarray(0, 512)).trim(), from)
          .map((r) => ({ to: r.to, bytes: encoder.encode(r.text) }));
      }
      for (const reply of replies) {
        try {
          // A full socket buffer drops the reply, as the network could: never wait for room.
          sys.sendTo(socket.fd, new Uint8Array(reply.bytes), reply.to);
        } catch (error) {
          this.#log.debug("udp reply failed", {
            to: formatAddress(reply.to),
            error: (error as Error).message,
          });
        }
      }
    }
  }

  /** The STUN answer to `datagram`, or null (not a request, or over the source's rate). */
  #stun(socket: Socket, datagram: Uint8Array, from: SocketAddress): Uint8Array | null {
    const local = socket.localAddress();
    if (from.family === "unix" || local.family === "unix") return null;
    const key = addressKey(from);
    let bucket = this.#stunRates.get(key);
    if (bucket === undefined) {
      bucket = new TokenBucket(STUN_PER_SECOND, STUN_BURST, this.#clock);
      this.#stunRates.set(key, bucket);
      if (this.#stunRates.size > STUN_SOURCES) {
        const oldest = this.#stunRates.keys().next().value;
        if (oldest !== undefined) this.#stunRates.delete(oldest);
      }
    }
    if (!bucket.take()) return null;
    return looksLikeStun(datagram)
      ? stunAnswer(datagram, from, local)
      : classicAnswer(datagram, from, local);
  }

  /**
   * One UDP request on the main port; returns the datagrams to send. See
   * `codec.ts` for the protocol: register, keepalive, connect, observe.
   */
  request(text: string, from: SocketAddress): { to: SocketAddress; text: string }[] {
    const now = this.#clock();
    const reply = (t: string) => [{ to: from, text: t }];
    const [command = "", name = "", ...rest] = text.split("|");
    if (command === "observe" && name === "") return reply(observedLine(from).trimEnd());
    if (!["register", "keepalive", "connect"].includes(command)) {
      return reply(`error|-|unknown command "${command.slice(0, 20)}"`);
    }
    const credential = command === "register" && rest.length === 1 ? rest[0] : undefined;
    if ((rest.length > 0 && credential === undefined) || !isPeerId(name)) {
      return reply(`error|${command}|bad name (1-128 of A-Z a-z 0-9 . _ : @ + = / -)`);
    }
    if (credential !== undefined && !isCredential(credential)) {
      return reply("error|register|bad credential (16-128 of A-Z a-z 0-9 _ -)");
    }
    switch (command) {
      case "register": {
        // UDP names are bound to their endpoint; only a server secret adds a credential check.
        if (this.#policy.mode === "secret") {
          const refusal = this.#policy.admit(name, credential, addressKey(from), now);
          if (refusal !== null) return reply(`error|register|${refusal}`);
        }
        const refused = this.#names.register(name, from, now);
        if (refused === "taken") return reply("error|register|name is taken");
        if (refused === "full") return reply("error|register|too many registrations");
        if (refused === "address-full") {
          return reply("error|register|too many names from your address");
        }
        return reply(`registered|${name}|${endpointText(from)}`);
      }
      case "keepalive":
        if (!this.#names.isOwner(name, from, now)) {
          return reply(`error|keepalive|unknown name (expired or not yours)`);
        }
        this.#names.renew(name, now);
        return reply(`alive|${name}`);
      default: {
        const held = this.#names.get(name, now);
        if (held === undefined) return reply(`unknown|${name}`);
        if (!this.#names.allowConnect(name, now)) {
          return reply("error|connect|rate limit exceeded");
        }
        // Both sides learn the other's endpoint; they punch to each other from there.
        return [
          { to: from, text: `peer|${name}|${endpointText(held.endpoint)}` },
          { to: held.endpoint, text: `peer|-|${endpointText(from)}` },
        ];
      }
    }
  }
}
