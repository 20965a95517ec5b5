import { assert, assertEquals, assertThrows } from "../assert.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import {
  combine,
  discoverEndpoint,
  type Mapping,
  type Observe,
  observeAll,
  predict,
} from "../../src/discovery/endpoint.ts";
import { withServer } from "../rendezvous/peers.ts";
import { freePort } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";

const IP = "172.16.1.2";
const L = 21000;
const m = (localPort: number, port: number, ip = IP): Mapping => ({ ip, port, localPort });

Deno.test("two different ports from two probes are no step: random", () => {
  assertEquals(predict(L, [m(L, 40001), m(L, 40002)]), { ip: IP, ports: [40002], how: "random" });
  assertEquals(predict(L, [m(L, 50000), m(L, 1234)]), { ip: IP, ports: [1234], how: "random" });
});

Deno.test("a step is no evidence when the local port was seen once (one probe): random", () => {
  assertEquals(predict(L, [m(L, 40001), m(45000, 40002), m(45001, 40003)]).how, "random");
});

Deno.test("three mappings with a constant step predict the next two: delta", () => {
  assertEquals(predict(L, [m(L, 40001), m(L, 40002), m(L, 40003)]), {
    ip: IP,
    ports: [40004, 40005],
    how: "delta+1",
  });
  assertEquals(predict(L, [m(L, 40010), m(L, 40008), m(L, 40006)]), {
    ip: IP,
    ports: [40004, 40002],
    how: "delta-2",
  });
});

Deno.test("a step counts the fresh ports' mappings in order: two probes and one fresh port", () => {
  const fresh = 45678;
  const mappings = [m(L, 40001), m(L, 40002), m(fresh, 40003), m(fresh, 40004)];
  assertEquals(predict(L, mappings), { ip: IP, ports: [40005, 40006], how: "delta+1" });
});

Deno.test("three mappings whose steps differ are random", () => {
  assertEquals(predict(L, [m(L, 40001), m(L, 40002), m(L, 40004)]).how, "random");
  assertEquals(predict(L, [m(L, 40001), m(L, 40002), m(9, 40003), m(9, 40005)]).how, "random");
});

Deno.test("a step that would leave the port range is random", () => {
  assertEquals(predict(L, [m(L, 65533), m(L, 65534), m(L, 65535)]), {
    ip: IP,
    ports: [65535],
    how: "random",
  });
  // One of the two next ports still fits: only that one is listed.
  assertEquals(predict(L, [m(L, 65532), m(L, 65533), m(L, 65534)]).ports, [65535]);
});

Deno.test("every flow keeping its local port is preserved, with at least three observations", () => {
  assertEquals(predict(L, [m(L, L), m(L, L), m(45678, 45678), m(45678, 45678)]), {
    ip: IP,
    ports: [L],
    how: "preserved",
  });
  assertEquals(predict(L, [m(L, L), m(45678, 45678), m(45679, 45679)]).how, "preserved");
  // Two agreeing observations are not evidence enough.
  assertEquals(predict(L, [m(L, L), m(L, L)]).how, "random");
});

Deno.test("one public port per local port towards every probe is consistent", () => {
  const mappings = [m(L, 40001), m(L, 40001), m(45678, 40002), m(45678, 40002)];
  assertEquals(predict(L, mappings), { ip: IP, ports: [40001], how: "consistent" });
  assertEquals(predict(L, [m(L, 40001), m(L, 40001), m(L, 40001)]).how, "consistent");
  // A preserved local port whose fresh port was moved is still endpoint-independent.
  assertEquals(predict(L, [m(L, L), m(L, L), m(45678, 40002), m(45678, 40002)]), {
    ip: IP,
    ports: [L],
    how: "consistent",
  });
});

Deno.test("consistent needs three agreeing observations and every local port to agree", () => {
  // Two probes without a fresh port: only two observations agree.
  assertEquals(predict(L, [m(L, 40001), m(L, 40001)]).how, "random");
  // One probe: each local port is seen once, which cannot tell consistent from random.
  assertEquals(predict(L, [m(L, 40001), m(45678, 40100), m(45679, 41234)]).how, "random");
  // The fresh port was mapped to two ports: the NAT is endpoint-dependent after all.
  assertEquals(predict(L, [m(L, 40001), m(L, 40001), m(9, 40002), m(9, 40900)]).how, "random");
});

Deno.test("predict refuses no observations, none of the port, and different addresses", () => {
  assertThrows(() => predict(L, []), {
    name: "RangeError",
    message: "Cannot predict a port without observations",
  });
  assertThrows(() => predict(L, [m(9, 9), m(9, 9), m(9, 9)]), {
    name: "RangeError",
    message: "Cannot predict port 21000: no observation of a flow from it",
  });
  assertThrows(() => predict(L, [m(L, L), m(L, L, "172.16.9.9"), m(L, L)]), {
    name: "Error",
    message:
      "Cannot predict the endpoint: probes saw different addresses (172.16.1.2, 172.16.9.9, 172.16.1.2)",
  });
});

/** mulberry32: a small seeded generator, so a failure can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A simulated NAT in front of `observe`: `allocate(localPort, probe)` is the
 * public port of each new mapping. Fresh local ports (0) get 45000, 45001, ...
 */
function simulatedNat(allocate: (localPort: number, probe: InetAddress) => number): {
  observe: Observe;
  flows: string[];
} {
  const flows: string[] = [];
  let nextFresh = 45000;
  const observe: Observe = (local, probe) => {
    const localPort = local.port === 0 ? nextFresh++ : local.port;
    flows.push(`${local.port}->${formatAddress(probe)}`);
    return Promise.resolve({ ip: IP, port: allocate(localPort, probe), localPort });
  };
  return { observe, flows };
}

const PROBES = [7001, 7002, 7003].map((port) => inetAddress("172.16.0.1", port));
const signal = new AbortController().signal;

Deno.test("observeAll adds flows from one fresh port until three observations are held", async () => {
  const two = simulatedNat((localPort) => localPort);
  await observeAll(two.observe, "10.0.1.2", [L], PROBES.slice(0, 2), signal);
  assertEquals(two.flows, [
    "21000->172.16.0.1:7001",
    "21000->172.16.0.1:7002",
    "0->172.16.0.1:7001",
    "45000->172.16.0.1:7002",
  ]);
  const one = simulatedNat((localPort) => localPort);
  await observeAll(one.observe, "10.0.1.2", [L], PROBES.slice(0, 1), signal);
  assertEquals(one.flows, ["21000->172.16.0.1:7001", "0->172.16.0.1:7001", "0->172.16.0.1:7001"]);
  const twoPorts = simulatedNat((localPort) => localPort);
  await observeAll(twoPorts.observe, "10.0.1.2", [L, L + 1], PROBES.slice(0, 2), signal);
  assertEquals(twoPorts.flows, [
    "21000->172.16.0.1:7001",
    "21000->172.16.0.1:7002",
    "21001->172.16.0.1:7001",
    "21001->172.16.0.1:7002",
  ]);
  const three = simulatedNat((localPort) => localPort);
  await observeAll(three.observe, "10.0.1.2", [L], PROBES, signal);
  assertEquals(three.flows.length, 3);
});

for (const count of [1, 2, 3]) {
  Deno.test(`a random-mapping NAT is random in 2,000 of 2,000 predictions (${count} probes, seed 9)`, async () => {
    const random = seeded(9);
    const nat = simulatedNat(() => 1024 + Math.floor(random() * (65536 - 1024)));
    const hows = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const mappings = await observeAll(
        nat.observe,
        "10.0.1.2",
        [L],
        PROBES.slice(0, count),
        signal,
      );
      const how = predict(L, mappings).how;
      hows.set(how, (hows.get(how) ?? 0) + 1);
    }
    assertEquals(Object.fromEntries(hows), { random: 2000 });
  });

  Deno.test(`a sequential NAT's next mapping is the first predicted port, with two probes or more (${count} probes)`, async () => {
    let counter = 40000;
    const nat = simulatedNat(() => counter++);
    const mappings = await observeAll(
      nat.observe,
      "10.0.1.2",
      [L],
      PROBES.slice(0, count),
      signal,
    );
    const prediction = predict(L, mappings);
    if (count === 1) {
      // One probe cannot tell this NAT from an endpoint-independent one that allocates in turn.
      assertEquals(prediction.how, "random");
      return;
    }
    assertEquals(prediction.how, "delta+1");
    // The next new mapping (the flow to the peer) gets the first port; one flow in between, the second.
    assertEquals(prediction.ports, [counter, counter + 1]);
  });
}

Deno.test("an endpoint-independent NAT is consistent with two or more probes, not with one", async () => {
  for (const [count, how] of [[1, "random"], [2, "consistent"], [3, "consistent"]] as const) {
    const table = new Map<number, number>();
    let counter = 50000;
    const nat = simulatedNat((localPort) => {
      if (!table.has(localPort)) table.set(localPort, counter++);
      return table.get(localPort) ?? 0;
    });
    const mappings = await observeAll(
      nat.observe,
      "10.0.1.2",
      [L],
      PROBES.slice(0, count),
      signal,
    );
    assertEquals(predict(L, mappings).how, how, `${count} probes`);
    if (how === "consistent") assertEquals(predict(L, mappings).ports, [50000]);
  }
});

for (const protocol of ["tcp", "udp"] as const) {
  Deno.test(`discoverEndpoint over loopback (no NAT) with a real probe server: preserved (${protocol})`, async () => {
    // An address of 127/8 of this test's own, so that other processes' ports on 127.0.0.1 do not collide.
    const ip = `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${
      1 + Math.floor(Math.random() * 250)
    }`;
    const probePorts = [freePort(), freePort()];
    await withServer({ listen: inetAddress(ip, 0), probePorts }, async (server) => {
      const probes = probePorts.map((port) => inetAddress(ip, port));
      const signal = AbortSignal.timeout(5000);
      for (const count of [1, 2]) {
        for (const ports of [[freePort()], [freePort(), freePort()]]) {
          // One port and one probe: 3 flows (2 fresh ports); one port and two probes: 4 (1 fresh
          // port, rebound for the second probe); two ports: 2 + 1 fresh, or 4.
          const prediction = await discoverEndpoint(
            protocol,
            ip,
            ports,
            probes.slice(0, count),
            signal,
          );
          assertEquals(prediction, { ip, ports, how: "preserved" }, `${count} probes, ${ports}`);
        }
      }
      assert(server.address.port > 0);
    });
  });
}

const FRESH = "a fresh UDP port is never one another SO_REUSEADDR socket holds";
Deno.test({
  name: FRESH,
  ignore: skipUnless(isRoot(), FRESH, "needs its own network namespace (root)"),
}, async () => {
  // A namespace whose only ephemeral port is 40000, which another socket holds with SO_REUSEADDR.
  await withVoidNamespace("fr", async (ns) => {
    const exec = async (args: string[]) => {
      const out = await new Deno.Command("ip", { args: ["netns", "exec", ns, ...args] }).output();
      return new TextDecoder().decode(out.stdout).trim();
    };
    await exec(["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40000"]);
    const fixture = new URL("../fixtures/fresh_udp_port.ts", import.meta.url).pathname;
    const result = await exec([Deno.execPath(), "run", "--allow-ffi", "--allow-read", fixture]);
    assertEquals(result, "refused Cannot bind: EADDRINUSE (98)");
  });
});

Deno.test("several ports share one sequence: a sequential NAT's next two flows get the two ports", async () => {
  let counter = 40000;
  const nat = simulatedNat(() => counter++);
  const ports = [L, L + 1, L + 2];
  const mappings = await observeAll(nat.observe, "10.0.1.2", ports, PROBES.slice(0, 2), signal);
  assertEquals(mappings.length, 6);
  const combined = combine(ports.map((port) => predict(port, mappings)));
  assertEquals(combined, { ip: IP, ports: [counter, counter + 1], how: "delta+1" });
});

Deno.test("several ports of a random-mapping NAT are random, each with its last port", async () => {
  const random = seeded(11);
  const nat = simulatedNat(() => 1024 + Math.floor(random() * (65536 - 1024)));
  const mappings = await observeAll(
    nat.observe,
    "10.0.1.2",
    [L, L + 1],
    PROBES.slice(0, 2),
    signal,
  );
  const combined = combine([L, L + 1].map((port) => predict(port, mappings)));
  assertEquals(combined.how, "random");
  assertEquals(combined.ports, [mappings[1]?.port, mappings[3]?.port]);
});
