/**
 * `udp` and `udp-birthday` through NATs whose own stack answers unsolicited
 * datagrams (lab profile "answering": no input firewall). A punch that
 * reaches such a NAT before the peer's mapping exists is answered with ICMP
 * port unreachable and leaves an UNREPLIED conntrack entry that takes the
 * port the NAT would have preserved for the peer.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { NatProfile } from "../lab/lab.ts";
import { punch, punchFailure, withLab } from "../lab/punch.ts";
import { isRoot, note, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(isRoot(), "udp lab tests", "network namespaces need root");
const bytes = (s: string) => new TextEncoder().encode(s);

/** Sends `text` over a connected UDP socket and reads the peer's datagram, which must be it. */
async function exchange(from: Socket, to: Socket, text: string): Promise<void> {
  await from.write(bytes(text));
  const buf = new Uint8Array(2048);
  const n = await to.read(buf, AbortSignal.timeout(3000));
  assertEquals(new TextDecoder().decode(buf.subarray(0, n)), text);
}

Deno.test({
  name: "udp punches through two answering port-preserving NATs at least 9 times out of 10",
  ignore: needsRoot,
}, async () => {
  await withLab("answering", "answering", [], async (lab, clientA, clientB) => {
    let ok = 0;
    const failures: string[] = [];
    for (let n = 0; n < 10; n++) {
      try {
        const { a, b } = await punch(clientA, clientB, lab, "udp", n);
        try {
          // Both NATs kept the ports (no UNREPLIED entry took them).
          assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30000 + n });
          assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 20000 + n });
          await exchange(a, b, `datagram ${n} from A`);
          await exchange(b, a, `datagram ${n} from B`);
          ok++;
        } finally {
          a.close();
          b.close();
        }
      } catch (error) {
        failures.push(`#${n}: ${(error as Error).message.split("\n")[0]}`);
      }
    }
    note(`NOTE: udp between two answering NATs: ${ok} of 10`);
    assert(ok >= 9, `${ok} of 10: ${failures.join("; ")}`);
  });
});

/** `count` udp-birthday attempts between hard and easy NATs; the easy side's NAT answers. */
async function birthdayRate(natA: NatProfile, natB: NatProfile, count: number): Promise<void> {
  await withLab(natA, natB, ["--attempt-timeout", "10"], async (lab, clientA, clientB) => {
    let ok = 0;
    const failures: string[] = [];
    for (let n = 0; n < count; n++) {
      try {
        const { a, b } = await punch(clientA, clientB, lab, "udp-birthday", n);
        try {
          // The easy side talks to a random public port of the hard side's NAT,
          // the hard side to the easy side's own port (its NAT did not move it).
          const [easy, hard] = natA === "symmetric" ? [b, a] : [a, b];
          const [easyPublic, hardPublic] = natA === "symmetric"
            ? [lab.publicB, lab.publicA]
            : [lab.publicA, lab.publicB];
          assertEquals((easy.peerAddress() as { address: string }).address, hardPublic);
          assertEquals(hard.peerAddress(), {
            family: "inet",
            address: easyPublic,
            port: natA === "symmetric" ? 30000 + n : 20000 + n,
          });
          await exchange(a, b, `birthday ${n}`);
          await exchange(b, a, `back ${n}`);
          ok++;
        } finally {
          a.close();
          b.close();
        }
      } catch (error) {
        failures.push(`#${n}: ${(error as Error).message.split("\n")[0]}`);
      }
    }
    note(`NOTE: udp-birthday ${natA} to ${natB}: ${ok} of ${count}`);
    assert(ok >= count - 1, `${ok} of ${count}: ${failures.join("; ")}`);
  });
}

Deno.test({
  name:
    "udp-birthday gets from an endpoint-dependent NAT through an answering one at least 9 times out of 10",
  ignore: needsRoot,
}, () => birthdayRate("symmetric", "answering", 10));

Deno.test({
  name:
    "udp-birthday gets from an answering NAT through an endpoint-dependent one at least 9 times out of 10",
  ignore: needsRoot,
}, () => birthdayRate("answering", "symmetric", 10));

Deno.test({
  name:
    "when the peer's punches keep coming from a port it did not announce, udp gives up after 1-4 s, and so does the peer on its notice",
  ignore: needsRoot,
}, async () => {
  // A public A whose first punches reach B's answering NAT (a TTL that does
  // not stop them): B's NAT moves B's flow to another port, and A sees B's
  // real punches come from there. B sees nothing of A's.
  await withLab(
    "none",
    "answering",
    ["--nutss-ttl", "64", "--attempt-timeout", "20"],
    async (lab, clientA, clientB) => {
      const started = performance.now();
      const error = await punchFailure(clientA, clientB, lab, "udp", 0);
      const elapsed = performance.now() - started;
      // A's own reason, before its deadline (a timeout would say "timed out after 20000 ms").
      assertMatch(error.reason, /udp gave up: for \d+ ms the peer's punches came from port \d+/);
      const ms = Number(error.reason.match(/for (\d+) ms/)?.[1]);
      assert(ms >= 1000 && ms < 4000, `${ms} ms`);
      // punchFailure returns once both sides have ended: B ended on A's notice, not at 20 s.
      note(`NOTE: both sides ended after ${Math.round(elapsed)} ms`);
      assert(elapsed < 12000, `the attempts took ${Math.round(elapsed)} ms`);
    },
  );
});

Deno.test({
  name:
    "when birthday probing has sent every probe without an answer, both sides give up long before the deadline",
  ignore: needsRoot,
}, async () => {
  // The hard side's punches at TTL 64 reach the easy side's answering NAT,
  // whose UNREPLIED entries then move every probe that would have hit.
  await withLab(
    "symmetric",
    "answering",
    ["--nutss-ttl", "64", "--attempt-timeout", "20"],
    async (lab, clientA, clientB) => {
      const started = performance.now();
      const error = await punchFailure(clientA, clientB, lab, "udp-birthday", 0);
      const elapsed = performance.now() - started;
      // A (the hard side) reports B's notice: B spent its probes and gave up.
      assertMatch(
        error.reason,
        /udp gave up: the peer gave up: the peer's birthday probes hit none of this side's ports/,
      );
      // Probing takes about 2 s, the grace 1 s; the deadline is 20 s.
      note(`NOTE: both sides ended after ${Math.round(elapsed)} ms`);
      assert(elapsed < 12000, `the attempts took ${Math.round(elapsed)} ms`);
    },
  );
});

/** One plain udp attempt between an endpoint-dependent NAT and an answering one, which cannot connect. */
async function refusedByAnsweringNat(natA: NatProfile, natB: NatProfile): Promise<void> {
  await withLab(natA, natB, ["--attempt-timeout", "20"], async (lab, clientA, clientB) => {
    const started = performance.now();
    const error = await punchFailure(clientA, clientB, lab, "udp", 0);
    const elapsed = performance.now() - started;
    // The side whose punches the answering NAT refuses gives up; the other on its notice.
    assertMatch(
      error.reason,
      natA === "symmetric"
        ? /udp gave up: for \d+ ms the peer's NAT refused this side's punches to port 30000 \(ICMP port unreachable\)/
        : /udp gave up: the peer gave up: this side's NAT refused the peer's punches/,
    );
    note(`NOTE: both sides ended after ${Math.round(elapsed)} ms`);
    assert(elapsed < 12000, `the attempts took ${Math.round(elapsed)} ms`);
  });
}

Deno.test({
  name:
    "plain udp from an endpoint-dependent NAT to an answering one gives up on the refusals, long before the deadline",
  ignore: needsRoot,
}, () => refusedByAnsweringNat("symmetric", "answering"));

Deno.test({
  name:
    "plain udp from an answering NAT to an endpoint-dependent one gives up on the refusals, long before the deadline",
  ignore: needsRoot,
}, () => refusedByAnsweringNat("answering", "symmetric"));
