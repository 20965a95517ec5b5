import { assert, assertEquals, assertRejects } from "../assert.ts";
import { parseIp } from "../../ffi/ip.ts";
import { CaptureSocket, RawSender } from "../../ffi/packet_socket.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { tcpFlowProgram } from "../../src/packet/bpf.ts";
import { parsePacket, PROTO, udp } from "../../src/packet/packet.ts";
import { FLAGS } from "../../src/packet/tcp.ts";
import { ipv4 } from "../../src/packet/ip.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = skipUnless(
  isRoot(),
  "packet socket tests",
  "AF_PACKET and raw sockets need root (CAP_NET_RAW)",
);
const lo = parseIp("127.0.0.1");

function port(socket: Socket): number {
  return (socket.localAddress() as { port: number }).port;
}

Deno.test({
  name: "a filtered capture socket sees the host's own SYN of one flow and nothing else",
  ignore: ROOT,
}, async () => {
  using listener = Socket.create("inet", "stream", { reuseAddress: true });
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen();
  using other = Socket.create("inet", "stream");
  other.bind(inetAddress("127.0.0.1", 0));
  using client = Socket.create("inet", "stream");
  client.bind(inetAddress("127.0.0.1", 0));
  using capture = CaptureSocket.open(
    tcpFlowProgram({
      source: lo,
      destination: lo,
      sourcePort: port(client),
      destinationPort: port(listener),
      synOnly: true,
    }),
  );
  // Another flow's SYN first: the filter must drop it.
  await other.connect(listener.localAddress());
  await client.connect(listener.localAddress());
  const { packet, link } = await capture.next(AbortSignal.timeout(5000));
  const parsed = parsePacket(packet);
  assertEquals(parsed.protocol, PROTO.TCP);
  assertEquals([parsed.tcp?.sourcePort, parsed.tcp?.destinationPort], [
    port(client),
    port(listener),
  ]);
  assertEquals(parsed.tcp?.flags, FLAGS.SYN);
  assert(parsed.tcp?.options.mss !== undefined, "a Linux SYN carries MSS");
  assert(link.ifindex > 0);
  // On loopback the same SYN is seen leaving and arriving; then nothing more of this flow passes (no SYN).
  await capture.next(AbortSignal.timeout(5000));
  await assertRejects(() => capture.next(AbortSignal.timeout(300)));
});

Deno.test(
  { name: "a raw sender delivers a hand-built UDP packet to a local socket", ignore: ROOT },
  async () => {
    using receiver = Socket.create("inet", "datagram");
    receiver.bind(inetAddress("127.0.0.1", 0));
    using raw = RawSender.open("inet");
    const payload = new TextEncoder().encode("crafted");
    const datagram = udp.encode(
      { sourcePort: 9999, destinationPort: port(receiver), payload },
      lo,
      lo,
    );
    const header = ipv4.encode({
      tos: 0,
      totalLength: 20 + datagram.length,
      id: 1,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      ttl: 64,
      protocol: PROTO.UDP,
      source: lo,
      destination: lo,
      options: new Uint8Array(0),
    });
    const packet = new Uint8Array(header.length + datagram.length);
    packet.set(header);
    packet.set(datagram, header.length);
    await raw.send(packet, inetAddress("127.0.0.1", 0));
    const buf = new Uint8Array(64);
    const got = await receiver.receiveFrom(buf, AbortSignal.timeout(5000));
    assertEquals(new TextDecoder().decode(buf.subarray(0, got.length)), "crafted");
    assertEquals(got.from, { family: "inet", address: "127.0.0.1", port: 9999 });
  },
);
