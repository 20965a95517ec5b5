/**
 * Security issue #8, item 5, written as the attack: a host on A's LAN sees
 * every frame of A's LAN (the lab's `lanAttacker` hub), reads A's punches
 * and answers them from its own address, the way a neighbour on a shared
 * Wi-Fi cell could. A's punchd must never hand over a socket connected to
 * that host, and no punch on the wire may carry the attempt's token.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import { PunchdError } from "../../src/client/client.ts";
import type { Lab } from "../lab/lab.ts";
import { punch, withLab } from "../lab/punch.ts";
import { STRAYS_MESSAGE } from "../../src/techniques/udp_strays.ts";
import { type Service, spawnService, waitForOutput } from "../lab/services.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(isRoot(), "udp attack lab tests", "network namespaces need root");

/**
 * Python for the attacker (10.0.1.3 on A's LAN): sniffs A's LAN with
 * AF_PACKET for `seconds` and answers, from its own address and from the
 * port A punched (so that only the address differs), every datagram A sends:
 * a version-1 punch with the token read from it and the other role, the
 * datagram itself, and the datagram with its role byte flipped. Datagrams
 * that reach A from beyond its router (the real peer's punches) it replays
 * to A from its own address. At most `budget` datagrams in all. On SIGTERM
 * or at the end it prints how many it sent and, in hex, each distinct
 * payload A sent.
 */
function attacker(seconds: number, budget: number): string {
  return `
import re, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
A, ME = socket.inet_aton("10.0.1.2"), "10.0.1.3"
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
sniff.bind(("eth0", 0))
sniff.settimeout(0.1)
socks, seen, sent = {}, [], 0
def send(payload, sport, dport):
    global sent
    if sent >= ${budget}:
        return
    s = socks.get(sport)
    if s is None:
        s = socks[sport] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ME, sport))
    try:
        s.sendto(payload, ("10.0.1.2", dport))
    except OSError:
        pass
    sent += 1
print("ready", flush=True)
try:
    end = time.time() + ${seconds}
    while time.time() < end:
        try:
            f = sniff.recv(4096)
        except socket.timeout:
            continue
        if f[12:14] != b"\\x08\\x00" or f[23] != 17:
            continue
        ihl = (f[14] & 15) * 4
        src, dst, udp = f[26:30], f[30:34], f[14 + ihl:]
        sport, dport = int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")
        payload = udp[8:]
        if src == A:
            if len(seen) < 200 and payload.hex() not in seen:
                seen.append(payload.hex())
            m = re.match(rb"^PDU1\\|([0-9a-f]{32})\\|I\\|[01]$", payload)
            if m:
                send(b"PDU1|" + m.group(1) + b"|R|1", dport, sport)
            send(payload, dport, sport)
            if len(payload) > 4:
                flipped = bytearray(payload)
                flipped[4] = {0x49: 0x52, 0x52: 0x49}.get(flipped[4], flipped[4])
                send(bytes(flipped), dport, sport)
        elif dst == A and src[0:3] != A[0:3]:
            send(payload, sport, dport)
finally:
    print("sent", sent)
    for p in seen:
        print("from-a", p)
`;
}

/** The attacker's report: datagrams sent and the payloads it saw A send. */
async function report(service: Service): Promise<{ sent: number; payloads: Uint8Array[] }> {
  await service.stop();
  const lines = service.output().split("\n");
  const sent = Number(lines.find((l) => l.startsWith("sent "))?.slice(5) ?? "0");
  const payloads = lines.filter((l) => l.startsWith("from-a ")).map((l) => {
    const hex = l.slice(7).trim();
    return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
  });
  return { sent, payloads };
}

function startAttacker(lab: Lab, seconds: number): Service {
  return spawnService(lab, lab.attackerA.ns, ["python3", "-u", "-c", attacker(seconds, 3000)]);
}

/** True when `needle` occurs in `haystack`. */
function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** How many datagrams punchd's log says it refused for their source address. */
function refusedForAddress(logs: string): number {
  return logs.split("\n").filter((l) => l.includes(STRAYS_MESSAGE))
    .reduce((sum, l) => sum + Number(l.match(/ wrong_address=(\d+)/)?.[1] ?? 0), 0);
}

function describe(socket: Socket): string {
  const peer = socket.peerAddress() as { address: string; port: number };
  return `${peer.address}:${peer.port}`;
}

Deno.test({
  name: "a host on A's LAN that reads A's punches cannot take A's attempt, 5 times out of 5",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "preserving",
    "preserving",
    ["--attempt-timeout", "2"],
    async (lab, clientA, _clientB, services) => {
      const service = startAttacker(lab, 40);
      try {
        await waitForOutput(service, /ready/);
        const tokens: string[] = [];
        const taken: string[] = [];
        for (let n = 0; n < 5; n++) {
          // B never answers: only the attacker does.
          const attempt = clientA.initiate({
            id: `lonely${n}`,
            technique: "udp",
            srcIp: lab.hostA.ip,
            srcPorts: [22000 + n],
            dstIp: lab.publicB,
            dstPorts: [32000 + n],
          });
          const offer = await attempt.progress[Symbol.asyncIterator]().next();
          const token = String(offer.value).match(/^udp\d+:([0-9a-f]{32}):/)?.[1];
          assert(token !== undefined, `no token in the offer "${offer.value}"`);
          tokens.push(token);
          const outcome = await attempt.socket.then((s) => {
            const peer = describe(s);
            s.close();
            return peer;
          }, (e) => e);
          if (!(outcome instanceof PunchdError)) taken.push(`attempt ${n} connected to ${outcome}`);
        }
        const { sent, payloads } = await report(service);
        assert(
          sent > 0 && payloads.length > 0,
          "the attacker saw no punch: the test proved nothing",
        );
        assertEquals(taken, []);
        // The attacker's datagrams reached A's attempts and were refused for their address.
        assert(refusedForAddress(services.a.logs()) > 0, "no datagram of the attacker reached A");
        const encoder = new TextEncoder();
        for (const token of tokens) {
          const raw = Uint8Array.from(token.match(/../g) ?? [], (h) => parseInt(h, 16));
          for (const payload of payloads) {
            assert(!contains(payload, encoder.encode(token)), "a punch carries the token in hex");
            assert(!contains(payload, raw), "a punch carries the token's bytes");
          }
        }
      } finally {
        await service.stop();
      }
    },
    { lanAttacker: true },
  );
});

Deno.test({
  name: "with the real peer and the attacker both answering, A connects to the peer 5 times of 5",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    const service = startAttacker(lab, 40);
    try {
      await waitForOutput(service, /ready/);
      const wrong: string[] = [];
      for (let n = 0; n < 5; n++) {
        const { a, b } = await punch(clientA, clientB, lab, "udp", n);
        try {
          const expected = `${lab.publicB}:${30000 + n}`;
          if (describe(a) !== expected) wrong.push(`attempt ${n} connected to ${describe(a)}`);
          assertEquals(describe(b), `${lab.publicA}:${20000 + n}`);
        } finally {
          a.close();
          b.close();
        }
      }
      const { sent } = await report(service);
      assert(sent > 0, "the attacker answered nothing: the test proved nothing");
      assertEquals(wrong, []);
    } finally {
      await service.stop();
    }
  }, { lanAttacker: true });
});

Deno.test({
  name:
    "while birthday probing accepts any port of the peer's address, the LAN attacker is refused",
  ignore: needsRoot,
}, async () => {
  // A is the easy side: it probes random ports of B's symmetric NAT and takes punches from any of them.
  await withLab(
    "preserving",
    "symmetric",
    ["--attempt-timeout", "10"],
    async (lab, a, b, services) => {
      const service = startAttacker(lab, 40);
      try {
        await waitForOutput(service, /ready/);
        const wrong: string[] = [];
        const failures: string[] = [];
        for (let n = 0; n < 3; n++) {
          try {
            const outcome = await punch(a, b, lab, "udp-birthday", n);
            const peer = outcome.a.peerAddress() as { address: string };
            if (peer.address !== lab.publicB) {
              wrong.push(`attempt ${n} connected to ${describe(outcome.a)}`);
            }
            outcome.a.close();
            outcome.b.close();
          } catch (error) {
            failures.push((error as Error).message);
          }
        }
        const { sent } = await report(service);
        assert(sent > 0, "the attacker answered nothing: the test proved nothing");
        assertEquals(wrong, []);
        assert(refusedForAddress(services.a.logs()) > 0, "no datagram of the attacker reached A");
        assert(failures.length <= 1, `birthday probing failed: ${failures.join("; ")}`);
      } finally {
        await service.stop();
      }
    },
    { lanAttacker: true },
  );
});
