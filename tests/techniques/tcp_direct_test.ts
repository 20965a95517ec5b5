import { assertThrows } from "../assert.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { TcpDirect } from "../../src/techniques/tcp_direct.ts";

const base: AttemptSpec = {
  technique: "tcp-direct",
  role: "initiate",
  id: "x",
  client: 1,
  srcIp: "10.0.1.2",
  srcPorts: [1],
  dstIp: "10.0.2.2",
  dstPorts: [2],
  timeoutMs: 1000,
};

Deno.test("tcp-direct takes no TTL or the priming TTL 1-255 (none: hop discovery)", () => {
  const direct = new TcpDirect();
  direct.validate(base);
  direct.validate({ ...base, lowTtl: 1 });
  direct.validate({ ...base, lowTtl: 255 });
  for (const lowTtl of [0, 256, 2.5]) {
    assertThrows(() => direct.validate({ ...base, lowTtl }), {
      name: "RangeError",
      message: "tcp-direct low TTL must be 1-255",
    });
  }
});

Deno.test("a tcp-direct responder needs the initiator's direct1", () => {
  const direct = new TcpDirect();
  direct.validate({ ...base, role: "respond", extra: "direct1" });
  assertThrows(() => direct.validate({ ...base, role: "respond", extra: "direct2" }), {
    name: "SyntaxError",
    message: 'tcp-direct expects EXTRA "direct1"',
  });
});
