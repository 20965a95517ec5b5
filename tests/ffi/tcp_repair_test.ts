import { assert, assertEquals } from "../assert.ts";
import { parseIp } from "../../ffi/ip.ts";
import { CaptureSocket } from "../../ffi/packet_socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { repairConnect, timestampOption } from "../../ffi/tcp_repair.ts";
import { tcpFlowProgram } from "../../src/packet/bpf.ts";
import { parsePacket } from "../../src/packet/packet.ts";
import { freePort, readExactly } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = skipUnless(
  isRoot(),
  "TCP_REPAIR tests",
  "TCP_REPAIR needs CAP_NET_ADMIN, capture sockets CAP_NET_RAW",
);
/** PACKET_OUTGOING: a packet the host sent (loopback shows each one twice). */
const OUTGOING = 4;

Deno.test("the TCP_TIMESTAMP value never has its lowest bit set: it rounds up to even", () => {
  assertEquals(timestampOption(0), 0);
  assertEquals(timestampOption(1), 2);
  assertEquals(timestampOption(1000), 1000);
  assertEquals(timestampOption(1001), 1002);
  assertEquals(timestampOption(0xfffffffe), 0xfffffffe);
  assertEquals(timestampOption(0xffffffff), 0); // the clock wraps
});

Deno.test({
  name:
    "on the wire, a repaired socket given an odd timestamp counts milliseconds on from it, not microseconds",
  ignore: ROOT,
}, async () => {
  const lo = "127.0.0.1";
  const [portOne, portTwo] = [freePort(), freePort()];
  const one = inetAddress(lo, portOne);
  const two = inetAddress(lo, portTwo);
  using capture = CaptureSocket.open(tcpFlowProgram({
    source: parseIp(lo),
    destination: parseIp(lo),
    sourcePort: portOne,
    destinationPort: portTwo,
  }));
  // Two repaired ends of one connection; the first one's clock shows an odd value.
  const common = { mss: 1460, sackPermitted: false, peerWindow: 65535 };
  const a = repairConnect({
    ...common,
    local: one,
    remote: two,
    sendSeq: 1000,
    recvSeq: 5000,
    timestamp: 7777,
  }).socket;
  using _a = a;
  using b = repairConnect({
    ...common,
    local: two,
    remote: one,
    sendSeq: 5000,
    recvSeq: 1000,
    timestamp: 100,
  }).socket;
  const built = performance.now();
  await a.write(new TextEncoder().encode("x"));
  const firstSent = performance.now();
  await new Promise((r) => setTimeout(r, 300));
  const secondStart = performance.now();
  await a.write(new TextEncoder().encode("y"));
  const secondSent = performance.now();
  assertEquals(new TextDecoder().decode(await readExactly(b, 2)), "xy");

  const tsvals: number[] = [];
  while (tsvals.length < 2) {
    const captured = await capture.next(AbortSignal.timeout(5000));
    const tcp = parsePacket(captured.packet).tcp;
    if (captured.link.pkttype !== OUTGOING || tcp === undefined || tcp.payload.length === 0) {
      continue;
    }
    assert(tcp.options.timestamp !== undefined, "the segment carries no timestamp");
    tsvals.push(tcp.options.timestamp.value);
  }
  const [x = 0, y = 0] = tsvals;
  // From 7778 (7777 rounded up to even) on, in milliseconds; 50 ms allow for a busy machine.
  const sinceBuilt = x - 7778;
  assert(
    sinceBuilt >= 0 && sinceBuilt <= firstSent - built + 50,
    `first TSval ${x}: ${sinceBuilt} after 7778, ${(firstSent - built).toFixed(1)} ms later`,
  );
  const advanced = (y - x) >>> 0;
  assert(
    advanced >= secondStart - firstSent - 2 && advanced <= secondSent - built + 50,
    `TSval advanced ${advanced} between writes ${(secondStart - firstSent).toFixed(1)} ms apart`,
  );
});
