/**
 * Memory of the rendezvous server after a registration flood: RSS of a
 * spawned server (from /proc/PID/status) at rest, at the peak of `ROUNDS`
 * rounds of `BATCH` connections that register and close, and after it.
 *
 * ```
 * deno run --allow-all tests/rendezvous/memory_bench.ts [ROUNDS] [BATCH]
 * ```
 *
 * @module
 */

import { registrationFlood } from "./memory.ts";
import { spawnServer } from "./spawn.ts";

const rounds = Number(Deno.args[0] ?? 10);
const batch = Number(Deno.args[1] ?? 1000);
const server = await spawnServer([
  "--register-timeout",
  "60",
  "--max-peers",
  String(batch),
  "--max-connections",
  String(batch),
  "--max-connections-per-ip",
  String(batch),
  "--max-ids-per-ip",
  String(batch),
]);
try {
  const result = await registrationFlood(server, rounds, batch, 60_000);
  Deno.stdout.writeSync(
    new TextEncoder().encode(
      `${rounds * batch} registrations in ${rounds} rounds of ${batch}: RSS ` +
        `baseline ${result.baselineKib} KiB, peak ${result.peakKib} KiB, ` +
        `3 s after ${result.afterKib} KiB, lowest within 60 s ${result.settledKib} KiB ` +
        `(${result.settledAfterMs} ms after the flood)\n`,
    ),
  );
} finally {
  await server.stop();
}
