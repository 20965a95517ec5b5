import { assertEquals, assertThrows } from "../assert.ts";
import {
  decodeHello,
  decodeStepMessage,
  encodeHello,
  encodeStepMessage,
  type Hello,
} from "../../src/auto/wire.ts";
import { isValidData } from "../../src/control/codec.ts";

const full: Hello = {
  role: "initiate",
  protocol: "tcp",
  techniques: ["tcp-direct", "tcp-nutss", "tcp-syni"],
  port: 20000,
  locals: [{ ip: "10.0.1.2", prefixLength: 24 }, { ip: "fd00:1::2", prefixLength: 64 }],
  mapping: "pre",
  publicIp: "172.16.1.2",
  hops: 2,
};

Deno.test("a hello round-trips and is valid progress data", () => {
  const text = encodeHello(full);
  assertEquals(
    text,
    "auto1i;p=tcp;t=tcp-direct.tcp-nutss.tcp-syni;q=20000;l=10.0.1.2/24+fd00:1::2/64;m=pre;x=172.16.1.2;h=2",
  );
  assertEquals(isValidData(text), true);
  assertEquals(decodeHello(text), full);
  const bare: Hello = { ...full, role: "respond", locals: [], mapping: "unk" };
  delete bare.publicIp;
  delete bare.hops;
  assertEquals(decodeHello(encodeHello(bare)), bare);
});

Deno.test("a hello says r=1 when its daemon has a TURN server, and nothing otherwise", () => {
  const relay: Hello = { ...full, techniques: ["tcp-nutss", "relay"], relay: true };
  const text = encodeHello(relay);
  assertEquals(text.endsWith(";h=2;r=1"), true, text);
  assertEquals(decodeHello(text), relay);
  assertEquals(encodeHello(full).includes("r="), false);
});

Deno.test("a hello with anything wrong is refused whole", () => {
  const bad = [
    "auto2i;p=tcp;t=udp;q=1;m=pre",
    "auto1i;p=sctp;t=udp;q=1;m=pre",
    "auto1i;p=tcp;t=tcp-magic;q=1;m=pre",
    "auto1i;p=tcp;t=udp.udp;q=1;m=pre",
    "auto1i;p=tcp;t=udp;q=0;m=pre",
    "auto1i;p=tcp;t=udp;q=65536;m=pre",
    "auto1i;p=tcp;t=udp;q=0x10;m=pre",
    "auto1i;p=tcp;t=udp;q=1;m=weird",
    "auto1i;p=tcp;t=udp;q=1;m=pre;l=10.0.0.1",
    "auto1i;p=tcp;t=udp;q=1;m=pre;l=10.0.0.1/33",
    "auto1i;p=tcp;t=udp;q=1;m=pre;l=1.1.1.1/8+2.2.2.2/8+3.3.3.3/8+4.4.4.4/8+5.5.5.5/8",
    "auto1i;p=tcp;t=udp;q=1;m=pre;x=1.2.3",
    "auto1i;p=tcp;t=udp;q=1;m=pre;h=65",
    "auto1i;p=tcp;t=udp;q=1;m=pre;m=pre",
    "auto1i;p=tcp;t=udp;q=1;m=pre;z=1",
    "auto1i;p=tcp;t=udp;q=1;m=pre;",
    "auto1i;p=tcp;t=udp;q=1;m=pre;r=0",
    "auto1i;p=tcp;t=udp;q=1;m=pre;r=yes",
  ];
  for (const text of bad) assertThrows(() => decodeHello(text), SyntaxError);
});

Deno.test("step messages round-trip; anything else is refused", () => {
  for (
    const m of [
      { type: "step", step: 0, data: "nutss2:abc;x" },
      { type: "ended", step: 15 },
      { type: "won", step: 3 },
    ] as const
  ) {
    assertEquals(decodeStepMessage(encodeStepMessage(m)), m);
  }
  for (const text of ["s16;x", "s1", "s1;", "f01", "w1;x", "x1", "s-1;x", "f"]) {
    assertThrows(() => decodeStepMessage(text), SyntaxError);
  }
});
