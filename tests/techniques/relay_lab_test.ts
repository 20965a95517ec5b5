/**
 * `relay` in the NAT lab, through Debian's coturn (TCP allocations, RFC
 * 6062) on the internet router: where no punching technique can work (both
 * NATs map each flow to a random port, or double NATs), `auto` ends with a
 * relayed socket on both sides that carries 1 MiB each way, and `ok` says
 * through which server. Without a TURN server it fails as before.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import type { Socket } from "../../ffi/socket.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { punch, punchFailure } from "../lab/punch.ts";
import { hasCoturn, startStunServer, type StunServer } from "../lab/stun_server.ts";
import { type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ignore =
  skipUnless(isRoot(), "relay lab tests", "network namespaces and nftables need root") ||
  skipUnless(hasCoturn(), "relay lab tests", "no /usr/bin/turnserver (apt-get install coturn)");

const USER = "alice";
const PASSWORD = "correct-horse-battery";

interface TurnLab {
  lab: Lab;
  coturn: StunServer;
  a: PunchdClient;
  b: PunchdClient;
  daemonA: RunningDaemon;
  daemonB: RunningDaemon;
}

/** A file holding `text` in a fresh temporary directory (removed by the caller's finally). */
async function secretFile(dir: string, text: string): Promise<string> {
  const path = `${dir}/turn-password`;
  await Deno.writeTextFile(path, `${text}\n`, { mode: 0o600 });
  return path;
}

/**
 * A lab with coturn as STUN and TURN server; `turnA`/`turnB`: which daemons get `--turn`
 * (with `password` as theirs).
 */
async function withTurnLab(
  natA: NatProfile,
  natB: NatProfile,
  sides: { turnA: boolean; turnB: boolean; password?: string },
  fn: (t: TurnLab) => Promise<void>,
): Promise<void> {
  await using lab = await Lab.create({ natA, natB });
  await using coturn = await startStunServer(lab, { turn: { user: USER, password: PASSWORD } });
  const dir = await Deno.makeTempDir({ prefix: "punchd-relay-" });
  const daemons: RunningDaemon[] = [];
  const clients: PunchdClient[] = [];
  try {
    const file = await secretFile(dir, sides.password ?? PASSWORD);
    const turn = ["--turn", coturn.addresses[0], "--turn-user", USER, "--turn-password-file", file];
    const stun = coturn.addresses.flatMap((address) => ["--stun", address]);
    for (const [host, hasTurn] of [[lab.hostA, sides.turnA], [lab.hostB, sides.turnB]] as const) {
      daemons.push(
        await startDaemon([...stun, ...(hasTurn ? turn : [])], undefined, [
          "ip",
          "netns",
          "exec",
          host.ns,
        ]),
      );
    }
    for (const daemon of daemons) clients.push(await PunchdClient.connect(daemon.socketPath));
    const [a, b] = clients as [PunchdClient, PunchdClient];
    const [daemonA, daemonB] = daemons as [RunningDaemon, RunningDaemon];
    try {
      await fn({ lab, coturn, a, b, daemonA, daemonB });
    } catch (error) {
      throw new Error(
        `${
          (error as Error).message
        }\n--- punchd A ---\n${daemonA.logs()}\n--- punchd B ---\n${daemonB.logs()}`,
        { cause: error },
      );
    }
  } finally {
    for (const client of clients) await client.close();
    for (const daemon of daemons) await daemon.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends `bytes` bytes each way at once and checks every byte that arrives. */
async function carries(a: Socket, b: Socket, bytes: number): Promise<void> {
  const pattern = (seed: number) => {
    const data = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i++) data[i] = (i * 31 + seed) & 0xff;
    return data;
  };
  const send = async (socket: Socket, data: Uint8Array<ArrayBuffer>) => {
    for (let at = 0; at < data.length; at += 65536) {
      await socket.write(data.subarray(at, at + 65536), AbortSignal.timeout(20_000));
    }
  };
  const receive = async (socket: Socket, expected: Uint8Array) => {
    const got = new Uint8Array(expected.length);
    for (let have = 0; have < got.length;) {
      const n = await socket.read(got.subarray(have), AbortSignal.timeout(20_000));
      if (n === 0) throw new Error(`the stream ended after ${have} of ${got.length} bytes`);
      have += n;
    }
    assert(got.every((byte, i) => byte === expected[i]), "the bytes arrive unchanged");
  };
  const ab = pattern(1);
  const ba = pattern(2);
  await Promise.all([send(a, ab), send(b, ba), receive(b, ab), receive(a, ba)]);
}

Deno.test({
  name:
    "auto ends with a relayed connection through coturn between two random-mapping NATs: 1 MiB each way",
  ignore,
}, async () => {
  await withTurnLab(
    "symmetric",
    "symmetric",
    { turnA: true, turnB: false },
    async ({ lab, a, b }) => {
      const outcome = await punch(a, b, lab, "auto", 1);
      try {
        assertEquals(outcome.winner, "relay");
        // The initiator allocated: its socket is a data connection to the TURN server; the
        // responder's goes to the relayed address on the same host.
        assertEquals(outcome.a.peerAddress(), {
          family: "inet",
          address: lab.serverIp,
          port: 3478,
        });
        const remoteB = outcome.b.peerAddress();
        assert(
          remoteB.family === "inet" && remoteB.address === lab.serverIp && remoteB.port !== 3478,
        );
        await carries(outcome.a, outcome.b, 1 << 20);
      } finally {
        outcome.a.close();
        outcome.b.close();
      }
    },
  );
});

Deno.test({
  name: "relay through two double NATs (home NAT behind carrier NAT) carries 1 MiB each way",
  ignore,
}, async () => {
  // The lab's double NATs preserve ports, so auto punches them (tcp-nutss); the relay works too.
  await withTurnLab("double", "double", { turnA: true, turnB: false }, async ({ lab, a, b }) => {
    const outcome = await punch(a, b, lab, "relay", 6);
    try {
      assertEquals(outcome.a.peerAddress(), { family: "inet", address: lab.serverIp, port: 3478 });
      await carries(outcome.a, outcome.b, 1 << 20);
    } finally {
      outcome.a.close();
      outcome.b.close();
    }
  });
});

Deno.test({
  name:
    "a relay request names its TURN server in ok, and the roles swap when only the responder has one",
  ignore,
}, async () => {
  await withTurnLab(
    "symmetric",
    "preserving",
    { turnA: false, turnB: true },
    async ({ lab, a, b }) => {
      const vias: (string | undefined)[] = [];
      const initiate = a.initiate.bind(a);
      const respond = b.respond.bind(b);
      a.initiate = (params) => {
        const attempt = initiate(params);
        attempt.winner.then((w) => vias.push(w?.via));
        return attempt;
      };
      b.respond = (params) => {
        const attempt = respond(params);
        attempt.winner.then((w) => vias.push(w?.via));
        return attempt;
      };
      const outcome = await punch(a, b, lab, "relay", 2);
      try {
        await new Promise((r) => setTimeout(r, 0));
        assertEquals(vias, [`${lab.serverIp}:3478`, `${lab.serverIp}:3478`]);
        // Now the responder allocated: its socket is the data connection.
        assertEquals(outcome.b.peerAddress(), {
          family: "inet",
          address: lab.serverIp,
          port: 3478,
        });
        await carries(outcome.a, outcome.b, 64 * 1024);
      } finally {
        outcome.a.close();
        outcome.b.close();
      }
    },
  );
});

Deno.test({
  name:
    "without a TURN server auto fails between random-mapping NATs as before, saying why relay was skipped",
  ignore,
}, async () => {
  await withTurnLab(
    "symmetric",
    "symmetric",
    { turnA: false, turnB: false },
    async ({ lab, a, b }) => {
      const error = await punchFailure(a, b, lab, "auto", 3);
      assertMatch(error.message, /relay \(neither side has a TURN server\)/);
    },
  );
});

Deno.test({
  name: "wrong TURN credentials fail the relay with a clear reason and leave no socket behind",
  ignore,
}, async () => {
  await withTurnLab(
    "symmetric",
    "symmetric",
    { turnA: true, turnB: false, password: "wrong-password" },
    async ({ lab, a, b, daemonA }) => {
      // A first attempt starts the relay worker (its reactor and ledger are not the attempt's).
      await punchFailure(a, b, lab, "relay", 40);
      const baseline = await daemonA.settledSocketFdCount(daemonA.socketFdCount());
      const error = await punchFailure(a, b, lab, "relay", 4);
      assert(error instanceof PunchdError);
      assertMatch(error.message, /cannot allocate on 172\.16\.0\.1:3478: .*wrong credentials/);
      assert(!error.message.includes("wrong-password"), "the password is never shown");
      assert(!daemonA.logs().includes("wrong-password"), "the password is never logged");
      assertEquals(await daemonA.settledSocketFdCount(baseline), baseline);
    },
  );
});

Deno.test({
  name: "the daemon releases the TURN allocation once the application closes the relayed socket",
  ignore,
}, async () => {
  await withTurnLab(
    "symmetric",
    "symmetric",
    { turnA: true, turnB: false },
    async ({ lab, a, b, daemonA }) => {
      const outcome = await punch(a, b, lab, "relay", 5);
      await carries(outcome.a, outcome.b, 1024);
      assert(!daemonA.logs().includes("TURN allocation released"));
      outcome.a.close();
      outcome.b.close();
      // The keeper looks every 15 s.
      const deadline = Date.now() + 25_000;
      while (!daemonA.logs().includes("TURN allocation released")) {
        if (Date.now() > deadline) throw new Error("the allocation was not released");
        await new Promise((r) => setTimeout(r, 200));
      }
      assertMatch(daemonA.logs(), /TURN allocation released .*why="the relayed connection ended"/);
    },
  );
});
