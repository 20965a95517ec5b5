/**
 * punchd as its systemd unit runs it — uid nobody with only CAP_NET_ADMIN and
 * CAP_NET_RAW (ambient, bounding set of those two) — runs every technique
 * in the NAT lab, with coturn as STUN server (and TURN server for relay):
 * nftables, raw and packet sockets, TCP_REPAIR and the instance lock all
 * work without root. Without those capabilities it says which techniques
 * cannot run and why, and refuses them with that reason.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import type { TechniqueChoice } from "../../src/control/codec.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { punch, readExactly } from "../lab/punch.ts";
import { waitForOutput } from "../lab/services.ts";
import { hasCoturn, startStunServer } from "../lab/stun_server.ts";
import type { RunningDaemon } from "../helpers/daemon.ts";
import { freePort } from "../helpers/daemon.ts";
import { canRunServiceUser, prepareServiceRuntime, SERVICE_UID } from "../helpers/service_user.ts";
import { skipUnless } from "../helpers/skip.ts";

const NAME = "service user lab tests";
const ignore = skipUnless(canRunServiceUser(), NAME, "needs root and setpriv") ||
  skipUnless(hasCoturn(), NAME, "no /usr/bin/turnserver (apt-get install coturn)");

const USER = "svc";
const PASSWORD = "service-user-password";
const encoder = new TextEncoder();

/** The uid and capability sets of process `pid`. */
function processIdentity(pid: number): { uid: string; capEff: string; capBnd: string } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => status.match(new RegExp(`^${name}:\\s*(\\S+)`, "m"))?.[1] ?? "";
  return { uid: field("Uid"), capEff: field("CapEff"), capBnd: field("CapBnd") };
}

interface Cell {
  natA: NatProfile;
  natB: NatProfile;
  techniques: TechniqueChoice[];
  /** Give host A's daemon the TURN server. */
  turn?: boolean;
}

const CELLS: Cell[] = [
  {
    natA: "preserving",
    natB: "preserving",
    techniques: ["tcp-nutss", "tcp-syni", "tcp-prime", "udp", "udp-prime", "auto"],
  },
  { natA: "rst", natB: "rst", techniques: ["tcp-direct"] },
  { natA: "symmetric", natB: "preserving", techniques: ["udp-birthday"] },
  { natA: "symmetric", natB: "symmetric", techniques: ["relay", "auto"], turn: true },
];

for (const cell of CELLS) {
  Deno.test({
    name: `as nobody with CAP_NET_ADMIN and CAP_NET_RAW only, ${
      cell.techniques.join(", ")
    } connect between "${cell.natA}" and "${cell.natB}" NATs, data both ways`,
    ignore,
  }, async () => {
    await using runtime = await prepareServiceRuntime();
    await using lab = await Lab.create({ natA: cell.natA, natB: cell.natB });
    await using coturn = await startStunServer(lab, {
      turn: { user: USER, password: PASSWORD },
    });
    const secret = `${runtime.dir}/turn-password`;
    await Deno.writeTextFile(secret, `${PASSWORD}\n`, { mode: 0o600 });
    await Deno.chown(secret, SERVICE_UID, 0);
    const stun = coturn.addresses.flatMap((address) => ["--stun", address]);
    const turn = ["--turn", coturn.addresses[0] ?? "", "--turn-user", USER];
    const daemons: RunningDaemon[] = [];
    const clients: PunchdClient[] = [];
    try {
      for (const [name, host] of [["a", lab.hostA], ["b", lab.hostB]] as const) {
        const args = [...stun];
        if (cell.turn && name === "a") args.push(...turn, "--turn-password-file", secret);
        daemons.push(await runtime.start(name, args, ["ip", "netns", "exec", host.ns]));
      }
      for (const daemon of daemons) {
        // startDaemon's pid runs `ip netns exec`, env, setpriv and sh, each exec'ing the next:
        // it is the daemon's own.
        const identity = processIdentity(daemon.pid);
        assertEquals(identity.uid, String(SERVICE_UID));
        assertEquals(identity.capEff, "0000000000003000");
        assertEquals(identity.capBnd, "0000000000003000");
        // The client checks the daemon's uid (SO_PEERCRED): this one is the service user.
        clients.push(await PunchdClient.connect(daemon.socketPath, { daemonUid: SERVICE_UID }));
      }
      const [a, b] = clients as [PunchdClient, PunchdClient];
      const status = await a.status();
      for (const [technique, available] of Object.entries(status.available)) {
        assertEquals(available, true, `${technique} is available to the service user`);
      }
      let n = 0;
      for (const technique of cell.techniques) {
        for (let i = 0; i < 2; i++, n++) {
          const outcome = await punch(a, b, lab, technique, n);
          try {
            if (technique !== "relay" && outcome.winner !== "relay") {
              const remote = outcome.a.peerAddress();
              assert(remote.family === "inet" && remote.address === lab.publicB, technique);
            }
            await outcome.a.write(encoder.encode(`ping ${technique} ${n}`));
            assertEquals(
              await readExactly(outcome.b, `ping ${technique} ${n}`.length),
              `ping ${technique} ${n}`,
            );
            await outcome.b.write(encoder.encode(`pong ${n}`));
            assertEquals(await readExactly(outcome.a, `pong ${n}`.length), `pong ${n}`);
          } finally {
            outcome.a.close();
            outcome.b.close();
          }
        }
      }
      const after = await a.status();
      const ok = cell.techniques.reduce(
        (sum, t) => sum + (after.techniques[t === "auto" ? "auto" : t]?.ok ?? 0),
        0,
      );
      assertEquals(ok, n, JSON.stringify(after.techniques));
    } catch (error) {
      throw new Error(
        `${(error as Error).message}\n${
          daemons.map((d, i) => `--- punchd ${"AB"[i]} ---\n${d.logs()}`).join("\n")
        }`,
        { cause: error },
      );
    } finally {
      for (const client of clients) await client.close();
      for (const daemon of daemons) assertEquals(await daemon.stop(), 0);
    }
  });
}

Deno.test({
  name:
    "without CAP_NET_ADMIN and CAP_NET_RAW the start-up line lists only what can run, says why not, and refuses the rest with that reason",
  ignore,
}, async () => {
  await using runtime = await prepareServiceRuntime();
  await using daemon = await runtime.start("nocaps", [], [], "");
  const client = await PunchdClient.connect(daemon.socketPath, { daemonUid: SERVICE_UID });
  try {
    assertEquals(processIdentity(daemon.pid).capEff, "0000000000000000");
    // The socket accepts before the start-up line is logged, and the log is read as it comes.
    await waitForOutput({ output: daemon.logs }, /punchd started/);
    const started = daemon.logs().split("\n").find((line) => line.includes("punchd started")) ??
      "";
    assertMatch(started, /techniques=tcp-direct,udp,udp-birthday,udp-prime,relay /);
    assertMatch(started, /tcp-nutss: needs CAP_NET_ADMIN and CAP_NET_RAW/);
    const status = await client.status();
    assertEquals(status.available["tcp-syni"], "needs CAP_NET_ADMIN and CAP_NET_RAW");
    assertEquals(status.available["udp"], true);
    const attempt = client.initiate({
      id: "syni",
      technique: "tcp-syni",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.1",
      dstPorts: [freePort()],
    });
    const error = await attempt.socket.then(() => null, (e) => e);
    assert(error instanceof PunchdError);
    assertMatch(error.reason, /tcp-syni cannot run here: needs CAP_NET_ADMIN and CAP_NET_RAW/);
  } finally {
    await client.close();
  }
});
