/**
 * The built executables do punchd's job: in the lab, dist/punchd-rendezvous
 * serves the probe ports and a dist/punchd behind each NAT punches a direct
 * TCP connection with tcp-direct, data flowing both ways.
 *
 * @module
 */

import { assert } from "../assert.ts";
import { collectOutput, waitForSocket } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { Lab } from "../lab/lab.ts";
import { assertDirectTcpPunches } from "../lab/punch.ts";
import { PROBE_PORTS, RENDEZVOUS_PORT, spawnService, waitForOutput } from "../lab/services.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { builtDist } from "./build.ts";

const needsRoot = skipUnless(
  isRoot(),
  "dist lab test",
  "network namespaces and nftables need root",
);

/** dist/punchd in namespace `ns`, with its socket in a fresh directory. */
async function startDistDaemon(exe: string, cache: string, ns: string, args: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "punchd-dist-lab-" });
  const socketPath = `${dir}/punchd.socket`;
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      "env",
      `PUNCHD_CACHE=${cache}`,
      exe,
      "--socket",
      socketPath,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, sofar } = collectOutput(child);
  let stopped: Promise<void> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await output;
      await Deno.remove(dir, { recursive: true });
    })();
    return stopped;
  };
  try {
    await Promise.race([
      waitForSocket(socketPath, 30_000),
      child.status.then((s) => {
        throw new Error(`dist/punchd exited with ${s.code} before listening`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${sofar()}`);
  }
  return { socketPath, logs: sofar, stop };
}

Deno.test({
  name: "dist/punchd and dist/punchd-rendezvous punch a tcp-direct connection in the lab",
  ignore: needsRoot,
}, async () => {
  const dist = await builtDist();
  // One cache for all three, unpacked before they start (a first run takes a second or two).
  const cache = await dist.scratch();
  const unpack = await new Deno.Command("env", {
    args: [`PUNCHD_CACHE=${cache}`, `${dist.out}/punchd`, "--version"],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(unpack.success, new TextDecoder().decode(unpack.stderr));
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  const rendezvous = spawnService(lab, lab.internet.ns, [
    "env",
    `PUNCHD_CACHE=${cache}`,
    `${dist.out}/punchd-rendezvous`,
    "--listen",
    `${lab.serverIp}:${RENDEZVOUS_PORT}`,
    ...PROBE_PORTS.flatMap((port) => ["--probe-port", String(port)]),
  ]);
  const daemons: Awaited<ReturnType<typeof startDistDaemon>>[] = [];
  const clients: PunchdClient[] = [];
  try {
    await waitForOutput(rendezvous, /rendezvous server listening/, 30_000);
    const probes = PROBE_PORTS.flatMap((port) => ["--probe", `${lab.serverIp}:${port}`]);
    for (const host of [lab.hostA, lab.hostB]) {
      daemons.push(
        await startDistDaemon(`${dist.out}/punchd`, cache, host.ns, [
          "--log-level",
          "debug",
          ...probes,
        ]),
      );
    }
    for (const daemon of daemons) clients.push(await PunchdClient.connect(daemon.socketPath));
    const [a, b] = clients as [PunchdClient, PunchdClient];
    await assertDirectTcpPunches(a, b, lab, "tcp-direct", 1);
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\n--- rendezvous ---\n${rendezvous.output()}${
        daemons.map((d, i) => `\n--- punchd ${"AB"[i]} ---\n${d.logs()}`).join("")
      }`,
      { cause: error },
    );
  } finally {
    for (const client of clients) await client.close();
    for (const daemon of daemons) await daemon.stop();
    await rendezvous.stop();
  }
});
