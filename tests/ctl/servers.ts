/**
 * A rendezvous server on loopback for punchctl's tests (the lab's services
 * run it in a namespace; these tests need none).
 *
 * @module
 */

import { freePort } from "../helpers/daemon.ts";

const RENDEZVOUS_MAIN = new URL("../../src/rendezvous/main.ts", import.meta.url).pathname;

/** A rendezvous server on a free loopback port, listening; `stop` ends it. */
export async function rendezvousServer(): Promise<{ address: string; stop(): Promise<void> }> {
  const port = freePort();
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", RENDEZVOUS_MAIN, "--listen", `127.0.0.1:${port}`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logs = server.stderr.pipeThrough(new TextDecoderStream());
  const reader = logs.getReader();
  let log = "";
  const deadline = Date.now() + 15_000;
  while (!log.includes("rendezvous server listening") && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    log += value;
  }
  // Keep draining, so the server never blocks on a full pipe.
  const drained = (async () => {
    for (;;) if ((await reader.read()).done) return;
  })();
  const stop = async () => {
    try {
      server.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await server.status;
    await drained;
  };
  if (!log.includes("rendezvous server listening")) {
    await stop();
    throw new Error(`the rendezvous server did not start:\n${log}`);
  }
  return { address: `127.0.0.1:${port}`, stop };
}
