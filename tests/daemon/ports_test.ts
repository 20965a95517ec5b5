import { assertEquals, assertThrows } from "../assert.ts";
import { parsePortRanges, PortPolicy, PortRefusedError } from "../../src/daemon/ports.ts";

const free = () => false;

Deno.test("privileged ports and the allow/deny ranges bind non-root clients only", () => {
  const policy = new PortPolicy({
    unprivilegedStart: 1024,
    allow: parsePortRanges("2000-3000"),
    deny: parsePortRanges("2500"),
    inUse: free,
  });
  assertThrows(
    () => policy.check(1000, "tcp", [1023]),
    PortRefusedError,
    "SRC_PORT 1023 is privileged (below 1024): only root may use it",
  );
  assertThrows(() => policy.check(1000, "udp", [2500]), /not allowed by punchd's configuration/);
  assertThrows(() => policy.check(1000, "udp", [3001]), /not allowed by punchd's configuration/);
  policy.check(1000, "tcp", [2000, 2499, 3000]);
  policy.check(0, "tcp", [22, 2500, 4000]);
});

Deno.test("a port held by an attempt is refused to everyone until released", () => {
  const policy = new PortPolicy({ unprivilegedStart: 1024, inUse: free });
  const release = policy.claim(1, 1000, "tcp", [4000]);
  for (const uid of [1000, 1001, 0]) {
    assertThrows(
      () => policy.claim(2, uid, "tcp", [4000]),
      /SRC_PORT 4000 is in use by another attempt/,
    );
  }
  // UDP is another port space.
  policy.claim(3, 1000, "udp", [4000])();
  release();
  release();
  policy.claim(2, 1001, "tcp", [4000])();
  assertEquals(policy.held, 0);
});

Deno.test("attempts that claim with the same share key hold a port together, others may not", () => {
  const policy = new PortPolicy({ unprivilegedStart: 1024, inUse: () => true });
  // The first claim must find the port free (here the probe says busy: refused).
  assertThrows(() => policy.claim(1, 5, "udp", [5000], "client 1"), /in use by another udp socket/);
  const ok = new PortPolicy({ unprivilegedStart: 1024, inUse: free });
  const a = ok.claim(1, 5, "udp", [5000], "client 1");
  const b = ok.claim(2, 5, "udp", [5000], "client 1");
  assertThrows(() => ok.claim(3, 5, "udp", [5000], "client 2"), /in use by another attempt/);
  assertThrows(() => ok.claim(4, 5, "udp", [5000]), /in use by another attempt/);
  a();
  assertThrows(() => ok.claim(3, 5, "udp", [5000], "client 2"), /in use by another attempt/);
  b();
  ok.claim(3, 5, "udp", [5000], "client 2")();
  assertEquals(ok.held, 0);
});

Deno.test("port ranges parse strictly", () => {
  assertEquals(parsePortRanges("1-2,7"), [{ first: 1, last: 2 }, { first: 7, last: 7 }]);
  for (const bad of ["", "0", "1-", "01", "0x10", " 1", "1e2", "5-4", "65536", "1,,2"]) {
    assertThrows(() => parsePortRanges(bad), Error, bad);
  }
});
