/**
 * Which source ports a client may have punchd bind for it, and who holds
 * each port now.
 *
 * punchd binds as root and sets SO_REUSEADDR/SO_REUSEPORT (a technique's
 * listener and its connecting sockets share the attempt's port). Unchecked,
 * that hands a client what it could not get itself: a privileged port, or a
 * place in the SO_REUSEPORT group of a root service (the kernel lets sockets
 * of the same uid join, and punchd's are root's), or another attempt's port
 * and its peer's connection. So, before an attempt (or `endpoint`) binds:
 *
 * - a port below `net.ipv4.ip_unprivileged_port_start`, or outside the
 *   operator's allowed ranges, is for root clients only;
 * - a port another attempt holds is refused, whoever asks; ports are shared
 *   only among the sockets of one attempt, and among the `udp` attempts of one
 *   client connection (a session port answering many peers shares one
 *   socket: same application, same owner);
 * - a port another socket of this network namespace holds is refused (the
 *   kernel's bind rules decide, see {@linkcode portInUse}: a TCP listener or
 *   a socket bound without SO_REUSEADDR, any bound UDP socket), so punchd
 *   never joins a group it did not make. A TCP port in TIME_WAIT is free:
 *   the last probe connection must not block the attempt that follows it.
 *   Sockets of other uids cannot join punchd's groups (the kernel requires
 *   the same uid).
 *
 * @module
 */

import { EADDRINUSE, EADDRNOTAVAIL, SyscallError } from "../../ffi/errno.ts";
import { Socket } from "../../ffi/socket.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import { readFileRaw } from "../../ffi/syscalls.ts";

/** A closed range of ports. */
export interface PortRange {
  first: number;
  last: number;
}

/** What an attempt binds. */
export type Transport = "tcp" | "udp";

/** Options of the policy. */
export interface PortPolicyOptions {
  /** Ports below this are privileged (default: read from /proc/sys/net/ipv4/ip_unprivileged_port_start). */
  unprivilegedStart?: number;
  /** When set, non-root clients may use only these ports. */
  allow?: PortRange[];
  /** Non-root clients may never use these ports. */
  deny?: PortRange[];
  /** Whether another socket holds the port now (default: {@linkcode portInUse}). */
  inUse?: (transport: Transport, port: number) => boolean;
}

/** A port request that is refused; the message is the client-facing reason. */
export class PortRefusedError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "PortRefusedError";
  }
}

/** Parses `1000-2000,3000` into ranges; throws SyntaxError/RangeError. */
export function parsePortRanges(text: string): PortRange[] {
  return text.split(",").map((part) => {
    const m = part.match(/^([1-9][0-9]{0,4})(?:-([1-9][0-9]{0,4}))?$/);
    if (m === null) throw new SyntaxError(`Cannot parse port range "${part}"`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (last > 65535 || first > last) throw new RangeError(`Cannot use port range "${part}"`);
    return { first, last };
  });
}

function inRanges(port: number, ranges: readonly PortRange[]): boolean {
  return ranges.some((r) => port >= r.first && port <= r.last);
}

/**
 * True when binding `port` now would conflict with another socket, by the
 * kernel's own rules, on any address of either family: a TCP probe with
 * SO_REUSEADDR (conflicts with a listener, or a socket bound without
 * SO_REUSEADDR, not with TIME_WAIT), a UDP probe without it (conflicts with
 * any bound socket). Never SO_REUSEPORT: the probe joins no group.
 */
export function portInUse(transport: Transport, port: number): boolean {
  const probes: SocketAddress[] = [
    { family: "inet", address: "0.0.0.0", port },
    { family: "inet6", address: "::", port },
  ];
  for (const address of probes) {
    let socket: Socket;
    try {
      socket = Socket.create(address.family, transport === "tcp" ? "stream" : "datagram", {
        reuseAddress: transport === "tcp",
      });
    } catch {
      continue; // No IPv6 in this kernel.
    }
    try {
      socket.bind(address);
    } catch (error) {
      if (error instanceof SyscallError && error.errno === EADDRINUSE) return true;
      if (error instanceof SyscallError && error.errno === EADDRNOTAVAIL) continue;
      throw error;
    } finally {
      socket.close();
    }
  }
  return false;
}

function readUnprivilegedStart(): number {
  try {
    const text = new TextDecoder().decode(
      readFileRaw("/proc/sys/net/ipv4/ip_unprivileged_port_start"),
    );
    const n = Number(text.trim());
    return Number.isInteger(n) && n >= 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

/** The ports attempts hold, and the rules for taking one. */
export class PortPolicy {
  readonly #options: PortPolicyOptions;
  readonly #unprivilegedStart: number;
  readonly #inUse: (transport: Transport, port: number) => boolean;
  /** `tcp:40000` to the owners holding it and the share key they hold it under (if any). */
  readonly #held = new Map<string, { owners: Set<number>; share: string | undefined }>();

  /** Builds the policy. */
  constructor(options: PortPolicyOptions = {}) {
    this.#options = options;
    this.#unprivilegedStart = options.unprivilegedStart ?? readUnprivilegedStart();
    this.#inUse = options.inUse ?? portInUse;
  }

  /** Ports held by attempts now. */
  get held(): number {
    return this.#held.size;
  }

  /**
   * Checks that a client of `uid` may bind `ports` now; throws
   * PortRefusedError with the reason. Claims nothing.
   */
  check(uid: number, transport: Transport, ports: readonly number[], share?: string): void {
    const { allow, deny } = this.#options;
    for (const port of ports) {
      if (uid !== 0) {
        if (port < this.#unprivilegedStart) {
          throw new PortRefusedError(
            `SRC_PORT ${port} is privileged (below ${this.#unprivilegedStart}): only root may use it`,
          );
        }
        if ((deny !== undefined && inRanges(port, deny)) || (allow && !inRanges(port, allow))) {
          throw new PortRefusedError(`SRC_PORT ${port} is not allowed by punchd's configuration`);
        }
      }
      const held = this.#held.get(`${transport}:${port}`);
      if (held !== undefined) {
        // Its holders' socket is bound: that is the sharing, not another socket.
        if (share !== undefined && held.share === share) continue;
        throw new PortRefusedError(`SRC_PORT ${port} is in use by another attempt`);
      }
      if (this.#inUse(transport, port)) {
        throw new PortRefusedError(`SRC_PORT ${port} is in use by another ${transport} socket`);
      }
    }
  }

  /**
   * Checks as {@linkcode check} does, then holds `ports` for `owner` until
   * the returned function is called (idempotent). Owners that claim with the
   * same `share` key may hold a port together.
   */
  claim(
    owner: number,
    uid: number,
    transport: Transport,
    ports: readonly number[],
    share?: string,
  ): () => void {
    this.check(uid, transport, ports, share);
    const keys = [...new Set(ports)].map((port) => `${transport}:${port}`);
    for (const key of keys) {
      const held = this.#held.get(key) ?? { owners: new Set<number>(), share };
      held.owners.add(owner);
      this.#held.set(key, held);
    }
    return () => {
      for (const key of keys) {
        const held = this.#held.get(key);
        if (held?.owners.delete(owner) && held.owners.size === 0) this.#held.delete(key);
      }
    };
  }
}
