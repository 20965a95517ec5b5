import { assert, assertEquals } from "../assert.ts";
import type { QueuedError } from "../../ffi/errqueue.ts";
import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress, type SocketAddress } from "../../ffi/structs.ts";
import { PortShare } from "../../src/techniques/udp_port_share.ts";
import { sendPunch } from "../../src/techniques/udp_policy.ts";

/** Resolves when `check` holds, polling every 10 ms for up to 2 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert(check(), `no ${what} within 2 s`);
}

Deno.test("a shared port reports each ICMP error it provokes and still delivers every datagram", async () => {
  // A port with no socket: datagrams to it come back as ICMP port unreachable.
  const closed = Socket.create("inet", "datagram");
  closed.bind(inetAddress("127.0.0.1", 0));
  const nowhere = closed.localAddress() as InetAddress;
  closed.close();
  const probe = Socket.create("inet", "datagram");
  probe.bind(inetAddress("127.0.0.1", 0));
  const local = probe.localAddress() as InetAddress;
  probe.close();
  const share = PortShare.acquire(local);
  const errors: QueuedError[] = [];
  const datagrams: SocketAddress[] = [];
  const unregister = share.register({
    offer: (_bytes, from) => {
      datagrams.push(from);
      return null;
    },
    refused: () => {},
    icmp: (error) => errors.push(error),
  });
  using peer = Socket.create("inet", "datagram");
  peer.bind(inetAddress("127.0.0.1", 0));
  try {
    const signal = AbortSignal.timeout(3000);
    for (let i = 0; i < 3; i++) {
      await sendPunch(share.socket, new Uint8Array([i]), nowhere, null, signal);
      await peer.sendTo(new Uint8Array([i]), local, signal);
    }
    await until(() => errors.length >= 3 && datagrams.length >= 3, "errors and datagrams");
    assertEquals(datagrams.length, 3);
    for (const error of errors) {
      assertEquals([error.origin, error.type, error.code], ["icmp", 3, 3]);
      assertEquals(error.destination, nowhere);
      assertEquals(error.offender, "127.0.0.1");
    }
  } finally {
    unregister();
    share.release();
  }
});
