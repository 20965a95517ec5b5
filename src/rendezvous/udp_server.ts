/**
 * The UDP side of the rendezvous server (see `codec.ts` for the protocol):
 * names registered by endpoint, keepalives, connects that tell both sides
 * each other's endpoint, and `observed` answers on the probe ports.
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
import { addressKey, type Clock, sleep } from "./limits.ts";
import type { UdpNames } from "./udp_names.ts";

const encoder = new TextEncoder();

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
      // Probe ports answer anything with the observed endpoint; the main port speaks the UDP protocol.
      const replies = main
        ? this.request(decoder.decode(buf.subarray(0, Math.min(length, 512))).trim(), from)
        : [{ to: from, text: observedLine(from).trimEnd() }];
      for (const reply of replies) {
        try {
          // A full socket buffer drops the reply, as the network could: never wait for room.
          sys.sendTo(socket.fd, encoder.encode(reply.text), reply.to);
        } catch (error) {
          this.#log.debug("udp reply failed", {
            to: formatAddress(reply.to),
            error: (error as Error).message,
          });
        }
      }
    }
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
