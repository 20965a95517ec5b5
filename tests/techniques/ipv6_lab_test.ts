import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { TechniqueName } from "../../src/control/codec.ts";
import { punch, punchdGuards, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(isRoot(), "IPv6 lab tests", "network namespaces need root");
const bytes = (s: string) => new TextEncoder().encode(s);

for (const technique of ["tcp-nutss", "tcp-syni", "udp"] as TechniqueName[]) {
  Deno.test({
    name:
      `${technique} punches through two port-preserving NAT66 routers over IPv6, directly, data both ways`,
    ignore: needsRoot,
  }, async () => {
    await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
      for (let n = 0; n < 3; n++) {
        const { a, b, endpointA } = await punch(clientA, clientB, lab, technique, n, "inet6");
        try {
          assertEquals(endpointA, { ip: lab.v6.publicA, ports: [20000 + n], source: "preserved" });
          assertEquals(a.peerAddress(), {
            family: "inet6",
            address: lab.v6.publicB,
            port: 30000 + n,
          });
          assertEquals(b.peerAddress(), {
            family: "inet6",
            address: lab.v6.publicA,
            port: 20000 + n,
          });
          await a.write(bytes(`six ${n}`));
          const buf = new Uint8Array(64);
          const got = await b.read(buf, AbortSignal.timeout(3000));
          assertEquals(new TextDecoder().decode(buf.subarray(0, got)), `six ${n}`);
        } finally {
          a.close();
          b.close();
        }
      }
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
    }, { ipv6: true });
  });
}

Deno.test({
  name: "the ICMPv6 time-exceeded rule matches the error the low-hop-limit SYN really provokes",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA) => {
    const attempt = clientA.initiate({
      id: "v6rule",
      technique: "tcp-nutss",
      srcIp: lab.v6.hostA,
      srcPorts: [25000],
      dstIp: lab.v6.publicB,
      dstPorts: [35000],
    });
    await attempt.progress[Symbol.asyncIterator]().next();
    // The SYN left with hop limit 2 and died in the internet router; its ICMPv6 error came back.
    let rule = "";
    for (let i = 0; i < 20; i++) {
      const chain = await lab.tryExec(lab.hostA.ns, [
        "nft",
        "list",
        "chain",
        "inet",
        "punchd",
        "input",
      ]);
      rule = chain.stdout.split("\n").find((l) => l.includes("@te6")) ?? "";
      if (/counter packets [1-9]/.test(rule)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assertMatch(rule, /icmpv6 type time-exceeded .*@te6 counter packets [1-9]\d* bytes \d+ drop/);
    const te6 = await lab.tryExec(lab.hostA.ns, ["nft", "list", "set", "inet", "punchd", "te6"]);
    assertMatch(te6.stdout, /elements = \{ 0x[0-9a-f]+ \. 0x[0-9a-f]+ \. 0x61a888b8 /);
    await attempt.cancel();
    const error = await attempt.socket.then(() => null, (e) => e);
    assert(error !== null);
    assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
  }, { ipv6: true });
});
