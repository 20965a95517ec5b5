/**
 * `make demo`: builds the NAT lab (two hosts behind port-preserving NATs
 * and an internet router), starts the rendezvous server, one punchd per
 * host and two example peers, which punch a direct TCP connection with
 * `auto` (it picks `tcp-nutss` between these NATs), exchange a message each way, and print the result and the
 * time to connect. Everything is torn down at the end, also on failure.
 *
 * Needs root (network namespaces, nftables), like punchd itself.
 *
 * @module
 */

import type { TechniqueChoice } from "../control/codec.ts";
import { Lab, type NatProfile } from "../../tests/lab/lab.ts";
import {
  type Service,
  spawnService,
  startServices,
  waitForOutput,
} from "../../tests/lab/services.ts";

const PEER_MAIN = new URL("./peer.ts", import.meta.url).pathname;
const encoder = new TextEncoder();

/** What one demo run produced. */
export interface DemoResult {
  /** Exit codes of peer A (initiator) and peer B (responder). */
  codes: [number, number];
  /** What each peer printed (stdout: the message it received; stderr: its status lines). */
  outputs: [string, string];
}

/** Options of a demo run. */
export interface DemoOptions {
  natA?: NatProfile;
  natB?: NatProfile;
  technique?: TechniqueChoice;
  /** Prints progress lines (the demo does; tests do not). */
  print?: (line: string) => void;
}

/** Milliseconds the two peers have to punch, exchange their messages and exit. */
const PEER_TIMEOUT_MS = 60_000;

/** Runs the whole demo once. */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const print = options.print ?? (() => {});
  const technique = options.technique ?? "auto";
  print(
    `building the NAT lab (A: ${options.natA ?? "preserving"} NAT, B: ${
      options.natB ?? "preserving"
    } NAT)`,
  );
  await using lab = await Lab.create({
    natA: options.natA ?? "preserving",
    natB: options.natB ?? "preserving",
  });
  await using services = await startServices(lab);
  print(
    `rendezvous server on ${services.rendezvousAddress}; punchd running on host A (${lab.hostA.ip}) and host B (${lab.hostB.ip})`,
  );
  const peer = (host: typeof lab.hostA, socketPath: string, args: string[]): Service =>
    spawnService(lab, host.ns, [
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-read",
      PEER_MAIN,
      "--punchd",
      socketPath,
      "--rendezvous",
      services.rendezvousAddress,
      "--local-ip",
      host.ip,
      "--technique",
      technique,
      ...args,
    ]);
  const b = peer(lab.hostB, services.b.socketPath, [
    "--id",
    "bob",
    "--port",
    "5000",
    "--message",
    "hello from B",
  ]);
  try {
    await waitForOutput(b, /waiting for a peer/);
    const a = peer(lab.hostA, services.a.socketPath, [
      "--id",
      "alice",
      "--port",
      "4000",
      "--connect",
      "bob",
      "--message",
      "hello from A",
    ]);
    try {
      // Bounded: a peer that never finishes is stopped and reported, not waited for forever.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finished = Promise.all([a.wait(), b.wait()]) as Promise<[number, number]>;
      const outcome = await Promise.race([
        finished,
        new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), PEER_TIMEOUT_MS)),
      ]);
      clearTimeout(timer);
      if (outcome === "timeout") {
        throw new Error(
          `the peers did not finish within ${
            PEER_TIMEOUT_MS / 1000
          } s\n--- A ---\n${a.output()}\n--- B ---\n${b.output()}`,
        );
      }
      return { codes: outcome, outputs: [a.output(), b.output()] };
    } finally {
      await a.stop();
    }
  } finally {
    await b.stop();
  }
}

if (import.meta.main) {
  if (Deno.uid() !== 0) {
    Deno.stderr.writeSync(
      encoder.encode(
        "demo: needs root (network namespaces and nftables), like punchd: run `sudo make demo`\n",
      ),
    );
    Deno.exit(1);
  }
  const say = (line: string) => Deno.stdout.writeSync(encoder.encode(`demo: ${line}\n`));
  try {
    const { codes, outputs } = await runDemo({ print: say });
    say("--- peer A (alice, behind NAT A, initiates) ---");
    Deno.stdout.writeSync(encoder.encode(outputs[0]));
    say("--- peer B (bob, behind NAT B, responds) ---");
    Deno.stdout.writeSync(encoder.encode(outputs[1]));
    const ok = codes[0] === 0 && codes[1] === 0;
    say(
      ok
        ? "success: a direct TCP connection through both NATs; the lab is torn down"
        : `failed (exit codes ${codes.join(", ")})`,
    );
    Deno.exit(ok ? 0 : 1);
  } catch (error) {
    say(`failed: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
