import { assertEquals, assertThrows } from "../assert.ts";
import { parseIp } from "../../ffi/ip.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../../src/errors.ts";
import { buildTcpPacket } from "../../src/packet/packet.ts";
import { FLAGS } from "../../src/packet/tcp.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { assertOwnFlow } from "../../src/techniques/tcp_raw.ts";
import { decodeSynInfo, encodeSynInfo, TcpSyni } from "../../src/techniques/tcp_syni.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

Deno.test("the initiator's SYN info round-trips, with absent options as -", () => {
  const info = {
    token: TOKEN,
    flows: [{
      seq: 4294967295,
      options: {
        mss: 1460,
        windowScale: 10,
        sackPermitted: true,
        timestamp: { value: 77, echo: 0 },
      },
    }],
  };
  const text = encodeSynInfo(info);
  assertEquals(text, `syni2:${TOKEN}:4294967295:1460:10:1:77`);
  assertEquals(decodeSynInfo(text), info);
  const bare = { token: TOKEN, flows: [{ seq: 5, options: {} }] };
  assertEquals(decodeSynInfo(encodeSynInfo(bare)), bare);
});

Deno.test("several SYNs, one per destination port, travel in one line separated by ;", () => {
  const info = {
    token: TOKEN,
    flows: [
      { seq: 1, options: { mss: 1460, timestamp: { value: 10, echo: 0 } } },
      { seq: 2, options: { mss: 1460, timestamp: { value: 11, echo: 0 } } },
      { seq: 3, options: {} },
      { seq: 4, options: { sackPermitted: true } },
    ],
  };
  const text = encodeSynInfo(info);
  assertEquals(text, `syni2:${TOKEN}:1:1460:-:0:10;2:1460:-:0:11;3:-:-:0:-;4:-:-:1:-`);
  assertEquals(decodeSynInfo(text), info);
  assertThrows(
    () => encodeSynInfo({ ...info, flows: [...info.flows, { seq: 5, options: {} }] }),
    RangeError,
  );
  assertThrows(() => encodeSynInfo({ ...info, flows: [] }), RangeError);
  assertThrows(
    () => decodeSynInfo(`${text};5:-:-:0:-`),
    { name: "RangeError", message: /at most 4 SYNs/ },
  );
});

Deno.test("malformed SYN info is refused", () => {
  for (
    const bad of [
      "",
      "syni2",
      `syni1:1:1:1:1:1`,
      `syni1:${TOKEN}:1:1:1:1:1`,
      `syni2:1:1:1:1:1`,
      `syni2:${TOKEN.toUpperCase()}:1:1:1:1:1`,
      `syni2:${TOKEN.slice(1)}:1:1:1:1:1`,
      `syni2:${TOKEN}:x:1:1:1:1`,
      `syni2:${TOKEN}:1:1:1:2:1`,
      `syni2:${TOKEN}:99999999999:-:-:0:-`,
      `syni2:${TOKEN}:1:-:-:0:9999999999`,
      `syni2:${TOKEN}:1:-:-:0:-:extra`,
      `syni2:${TOKEN}:`,
      `syni2:${TOKEN}:1:-:-:0:-;`,
      `syni2:${TOKEN}:1:-:-:0:-;;2:-:-:0:-`,
      `syni2:${TOKEN}:1:-:-:0:-;x:-:-:0:-`,
      `syni2:${TOKEN}:1:-:-:0:-;99999999999:-:-:0:-`,
    ]
  ) {
    assertThrows(
      () => decodeSynInfo(bad),
      (e: Error) => e instanceof SyntaxError || e instanceof RangeError,
      bad,
    );
  }
});

Deno.test("encoding SYN info refuses a malformed token", () => {
  assertThrows(
    () => encodeSynInfo({ token: "not-a-token", flows: [{ seq: 1, options: {} }] }),
    { name: "SyntaxError", message: /bad attempt token/ },
  );
});

const segment = (sourcePort: number, destinationPort: number) => ({
  sourcePort,
  destinationPort,
  seq: 1,
  ack: 0,
  flags: FLAGS.SYN,
  window: 1000,
  urgent: 0,
  options: {},
  payload: new Uint8Array(0),
});

Deno.test("injection is refused unless the packet is the attempt's own flow", () => {
  const local = inetAddress("10.0.2.2", 30000);
  const peer = inetAddress("172.16.1.2", 20000);
  const own = buildTcpPacket(parseIp("10.0.2.2"), parseIp("172.16.1.2"), segment(30000, 20000));
  assertOwnFlow(own, local, peer);
  const cases = [
    buildTcpPacket(parseIp("10.0.2.99"), parseIp("172.16.1.2"), segment(30000, 20000)), // someone else's address
    buildTcpPacket(parseIp("10.0.2.2"), parseIp("172.16.1.2"), segment(30001, 20000)), // another port of ours
    buildTcpPacket(parseIp("10.0.2.2"), parseIp("172.16.1.3"), segment(30000, 20000)), // another destination
    buildTcpPacket(parseIp("10.0.2.2"), parseIp("172.16.1.2"), segment(30000, 20001)), // another destination port
  ];
  for (const packet of cases) {
    assertThrows(() => assertOwnFlow(packet, local, peer), TechniqueError);
  }
});

Deno.test("tcp-syni validates ports and EXTRA before anything starts: 1 to 4 destination ports", () => {
  const base: AttemptSpec = {
    technique: "tcp-syni",
    role: "initiate",
    id: "x",
    client: 1,
    srcIp: "10.0.1.2",
    srcPorts: [1],
    dstIp: "10.0.2.2",
    dstPorts: [2],
    timeoutMs: 1000,
  };
  const syni = new TcpSyni();
  syni.validate(base);
  assertThrows(() => syni.validate({ ...base, srcPorts: [1, 2] }), RangeError);
  // What `endpoint` predicts for a sequential NAT (delta): two ports, or more from several.
  syni.validate({ ...base, dstPorts: [2, 3] });
  syni.validate({ ...base, dstPorts: [2, 3, 4, 5] });
  assertThrows(
    () => syni.validate({ ...base, dstPorts: [2, 3, 4, 5, 6] }),
    { name: "RangeError", message: "tcp-syni takes 1 to 4 destination ports" },
  );
  assertThrows(() => syni.validate({ ...base, dstPorts: [] }), RangeError);
  assertThrows(() => syni.validate({ ...base, role: "respond", extra: "direct1" }), SyntaxError);
  assertThrows(
    () => syni.validate({ ...base, role: "respond", extra: "syni1:1:-:-:0:-" }),
    { name: "SyntaxError", message: /syni2:TOKEN:SEQ/ },
  );
  syni.validate({ ...base, role: "respond", extra: `syni2:${TOKEN}:1:-:-:0:-` });
  syni.validate({ ...base, role: "respond", extra: `syni2:${TOKEN}:1:-:-:0:-;2:-:-:0:-` });
});
