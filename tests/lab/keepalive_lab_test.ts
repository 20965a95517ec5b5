/**
 * What a user relies on when a punched path idles: with the routers'
 * conntrack timeouts cut to a few seconds, TCP keepalive set by punchd
 * (`--tcp-keepalive`) and the UDP keepalive datagram ({@linkcode keepUdpAlive})
 * keep the NAT mappings, and the path carries data after 10 s of idling;
 * without them the NATs forget the path and data no longer arrives.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import { SO_KEEPALIVE, SO_TYPE, SOCK_STREAM, SOL_SOCKET } from "../../ffi/constants.ts";
import type { Socket } from "../../ffi/socket.ts";
import { keepUdpAlive } from "../../src/client/keepalive.ts";
import { canReadConntrack, conntrackEntries, writeSysctls } from "./conntrack.ts";
import type { Lab } from "./lab.ts";
import { punch, withLab } from "./punch.ts";
import { isRoot, note, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(isRoot(), "keepalive lab tests", "network namespaces need root");
const bytes = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long the punched path idles: over twice the shortened timeouts. */
const IDLE_MS = 10000;
/** How long a receiver waits for data that should arrive (or must not). */
const ARRIVAL_MS = 3000;

/** Conntrack timeouts cut short in both routers, before anything is punched. */
const SHORT_TIMEOUTS = {
  "net.netfilter.nf_conntrack_tcp_timeout_established": 4,
  "net.netfilter.nf_conntrack_udp_timeout": 3,
  "net.netfilter.nf_conntrack_udp_timeout_stream": 3,
};

/** A table for router B that drops the punched connection (host B's port 30000) both ways. */
const CUT_PATH = `table inet cut {
  chain forward {
    type filter hook forward priority -10; policy accept;
    tcp sport 30000 drop
    tcp dport 30000 drop
  }
}
`;

async function shortenTimeouts(lab: Lab): Promise<void> {
  await writeSysctls(lab, lab.routerA.ns, SHORT_TIMEOUTS);
  await writeSysctls(lab, lab.routerB.ns, SHORT_TIMEOUTS);
}

/**
 * The routers' conntrack entries of the path (router A: host A's port,
 * router B: host B's port) as "<router>: <state or protocol> <seconds left>",
 * or null when this kernel does not show conntrack entries in /proc.
 */
async function pathEntries(
  lab: Lab,
  protocol: "udp" | "tcp",
  n: number,
): Promise<string[] | null> {
  if (!(await canReadConntrack(lab, lab.routerA.ns))) {
    note("NOTE: /proc/net/nf_conntrack is missing: conntrack entries not checked");
    return null;
  }
  const a = await conntrackEntries(lab, lab.routerA.ns, protocol, 20000 + n, 30000 + n);
  const b = await conntrackEntries(lab, lab.routerB.ns, protocol, 30000 + n, 20000 + n);
  return [
    ...a.map((e) => `router A: ${e.state || protocol} ${e.timeoutSecs}`),
    ...b.map((e) => `router B: ${e.state || protocol} ${e.timeoutSecs}`),
  ];
}

/**
 * Resolves with the next non-empty datagram or stream data on `socket` as
 * text (empty UDP datagrams are keepalives and skipped), or null when none
 * comes within `ms` or the connection fails.
 */
async function nextData(socket: Socket, ms: number): Promise<string | null> {
  const signal = AbortSignal.timeout(ms);
  const buf = new Uint8Array(2048);
  for (;;) {
    let n: number;
    try {
      n = await socket.read(buf, signal);
    } catch {
      return null;
    }
    if (n > 0) return new TextDecoder().decode(buf.subarray(0, n));
    if (socket.getOption(SOL_SOCKET, SO_TYPE) === SOCK_STREAM) return null; // End of stream.
  }
}

/** `from` sends `text`; resolves with what `to` receives of it (null: nothing). */
async function carries(from: Socket, to: Socket, text: string): Promise<string | null> {
  await from.write(bytes(text));
  return await nextData(to, ARRIVAL_MS);
}

Deno.test({
  name: "with --tcp-keepalive 1,1,3 a punched TCP connection outlives 10 s idle behind 4 s NATs",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", ["--tcp-keepalive", "1,1,3"], async (lab, a, b) => {
    await shortenTimeouts(lab);
    const { a: socketA, b: socketB } = await punch(a, b, lab, "tcp-nutss", 0);
    try {
      assertEquals([socketA, socketB].map((s) => s.getOption(SOL_SOCKET, SO_KEEPALIVE)), [1, 1]);
      assertEquals(await carries(socketA, socketB, "before"), "before");
      await sleep(IDLE_MS);
      const entries = await pathEntries(lab, "tcp", 0);
      if (entries !== null) {
        assertEquals(entries.map((e) => e.replace(/ \d+$/, "")), [
          "router A: ESTABLISHED",
          "router B: ESTABLISHED",
        ]);
      }
      assertEquals(await carries(socketA, socketB, "ping"), "ping");
      assertEquals(await carries(socketB, socketA, "pong"), "pong");
    } finally {
      socketA.close();
      socketB.close();
    }
  });
});

Deno.test({
  name: "with --tcp-keepalive 1,1,3 a punched TCP connection whose path dies ends within seconds",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", ["--tcp-keepalive", "1,1,3"], async (lab, a, b) => {
    const { a: socketA, b: socketB } = await punch(a, b, lab, "tcp-nutss", 0);
    try {
      assertEquals(await carries(socketA, socketB, "before"), "before");
      // The path dies: router B drops everything of the connection, as after a NAT reboot.
      await lab.exec(lab.routerB.ns, ["nft", "-f", "-"], CUT_PATH);
      const started = performance.now();
      const ends = async (socket: Socket) => {
        const error = await socket.read(new Uint8Array(16), AbortSignal.timeout(20000)).then(
          () => null,
          (e: Error) => e,
        );
        return [error?.message ?? "no error", Math.round(performance.now() - started)] as const;
      };
      const [[errorA, msA], [errorB, msB]] = await Promise.all([ends(socketA), ends(socketB)]);
      assertEquals([errorA, errorB], [
        "Cannot recv: ETIMEDOUT (110)",
        "Cannot recv: ETIMEDOUT (110)",
      ]);
      // Idle 1 s, then 3 probes 1 s apart: about 4 s; 12 s leaves room on a loaded machine.
      assert(msA < 12000 && msB < 12000, `ended after ${msA} ms and ${msB} ms`);
    } finally {
      socketA.close();
      socketB.close();
    }
  });
});

Deno.test({
  name: "with --tcp-keepalive off the NATs forget an idle punched TCP connection and data is lost",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", ["--tcp-keepalive", "off"], async (lab, a, b) => {
    await shortenTimeouts(lab);
    const { a: socketA, b: socketB } = await punch(a, b, lab, "tcp-nutss", 0);
    try {
      assertEquals([socketA, socketB].map((s) => s.getOption(SOL_SOCKET, SO_KEEPALIVE)), [0, 0]);
      assertEquals(await carries(socketA, socketB, "before"), "before");
      await sleep(IDLE_MS);
      const entries = await pathEntries(lab, "tcp", 0);
      if (entries !== null) assertEquals(entries, []);
      assertEquals(await carries(socketA, socketB, "ping"), null);
    } finally {
      socketA.close();
      socketB.close();
    }
  });
});

Deno.test({
  name: "an empty datagram every second keeps a punched UDP path alive 10 s behind 3 s NATs",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, a, b) => {
    await shortenTimeouts(lab);
    const { a: socketA, b: socketB } = await punch(a, b, lab, "udp", 0);
    try {
      assertEquals(await carries(socketA, socketB, "before"), "before");
      using keepaliveA = keepUdpAlive(socketA, 1000);
      using keepaliveB = keepUdpAlive(socketB, 1000);
      await sleep(IDLE_MS);
      const entries = await pathEntries(lab, "udp", 0);
      if (entries !== null) {
        assertEquals(entries.map((e) => e.replace(/ \d+$/, "")), [
          "router A: udp",
          "router B: udp",
        ]);
      }
      assertEquals(await carries(socketA, socketB, "ping"), "ping");
      assertEquals(await carries(socketB, socketA, "pong"), "pong");
      assert(keepaliveA.sent >= 5 && keepaliveB.sent >= 5, "the keepalives were not sent");
    } finally {
      socketA.close();
      socketB.close();
    }
  });
});

Deno.test({
  name: "without keepalive datagrams the NATs forget an idle punched UDP path and data is lost",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, a, b) => {
    await shortenTimeouts(lab);
    const { a: socketA, b: socketB } = await punch(a, b, lab, "udp", 0);
    try {
      assertEquals(await carries(socketA, socketB, "before"), "before");
      await sleep(IDLE_MS);
      const entries = await pathEntries(lab, "udp", 0);
      if (entries !== null) assertEquals(entries, []);
      assertEquals(await carries(socketA, socketB, "ping"), null);
    } finally {
      socketA.close();
      socketB.close();
    }
  });
});
