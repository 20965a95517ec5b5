/**
 * The host's interface addresses through getifaddrs(3): what `auto` offers the
 * peer as direct (LAN) candidates.
 *
 * `struct ifaddrs` on LP64 Linux:
 * ```
 * 0  struct ifaddrs *ifa_next
 * 8  char *ifa_name
 * 16 unsigned int ifa_flags
 * 24 struct sockaddr *ifa_addr
 * 32 struct sockaddr *ifa_netmask
 * 40 union { *ifu_broadaddr; *ifu_dstaddr }
 * 48 void *ifa_data
 * ```
 *
 * @module
 */

import { AF_INET, AF_INET6 } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { formatIp } from "./ip.ts";
import { errno, libc } from "./libc.ts";

/** IFF_UP from <net/if.h>. */
export const IFF_UP = 0x1;
/** IFF_LOOPBACK from <net/if.h>. */
export const IFF_LOOPBACK = 0x8;

/** One address of one interface. */
export interface InterfaceAddress {
  /** Interface name, e.g. "eth0". */
  name: string;
  family: "inet" | "inet6";
  /** Canonical address text. */
  address: string;
  /** Prefix length from the netmask. */
  prefixLength: number;
  /** IFF_* flags of the interface. */
  flags: number;
  /** IPv6 scope id (non-zero for link-local addresses). */
  scopeId: number;
}

function readSockaddr(
  pointer: Deno.PointerValue,
): { family: "inet" | "inet6"; bytes: Uint8Array; scopeId: number } | null {
  if (pointer === null) return null;
  const view = new Deno.UnsafePointerView(pointer);
  const family = view.getUint16(0);
  if (family === AF_INET) {
    const bytes = new Uint8Array(4);
    view.copyInto(bytes, 4);
    return { family: "inet", bytes, scopeId: 0 };
  }
  if (family === AF_INET6) {
    const bytes = new Uint8Array(16);
    view.copyInto(bytes, 8);
    return { family: "inet6", bytes, scopeId: view.getUint32(24) };
  }
  return null;
}

function prefixLength(mask: Uint8Array | undefined): number {
  if (mask === undefined) return 0;
  let bits = 0;
  for (const byte of mask) {
    let b = byte;
    while (b & 0x80) {
      bits++;
      b = (b << 1) & 0xff;
    }
    if (byte !== 0xff) break;
  }
  return bits;
}

/** Every IPv4 and IPv6 address of every interface (getifaddrs(3)). */
export function interfaceAddresses(): InterfaceAddress[] {
  const out = new BigUint64Array(1);
  if (libc().getifaddrs(new Uint8Array(out.buffer)) < 0) {
    throw new SyscallError("getifaddrs", errno());
  }
  const head = Deno.UnsafePointer.create(out[0] ?? 0n);
  const result: InterfaceAddress[] = [];
  try {
    let node = head;
    // The list is the kernel's; bound the walk anyway.
    for (let n = 0; node !== null && n < 4096; n++) {
      const view = new Deno.UnsafePointerView(node);
      const namePointer = view.getPointer(8);
      const name = namePointer === null
        ? ""
        : Deno.UnsafePointerView.getCString(namePointer).slice(0, 64);
      const flags = view.getUint32(16);
      const addr = readSockaddr(view.getPointer(24));
      if (addr !== null) {
        const mask = readSockaddr(view.getPointer(32));
        result.push({
          name,
          family: addr.family,
          address: formatIp(addr.bytes),
          prefixLength: prefixLength(mask?.bytes),
          flags,
          scopeId: addr.scopeId,
        });
      }
      node = view.getPointer(0);
    }
  } finally {
    if (head !== null) libc().freeifaddrs(head);
  }
  return result;
}
