import { assert } from "../assert.ts";
import { registrationFlood } from "./memory.ts";
import { spawnServer } from "./spawn.ts";

const BATCH = 3000;
const MIB = 1024;

Deno.test("after 3000 registrations close, the server's memory returns close to where it was", async () => {
  const server = await spawnServer([
    "--max-peers",
    String(BATCH),
    "--max-connections",
    String(BATCH),
    "--max-connections-per-ip",
    String(BATCH),
    "--max-ids-per-ip",
    String(BATCH),
    "--register-timeout",
    "60",
  ]);
  try {
    // The garbage collector gives memory back some 20-30 s after the flood.
    const m = await registrationFlood(server, 1, BATCH, 45_000, 16 * MIB);
    const report = JSON.stringify(m);
    assert(m.peakKib - m.baselineKib < 90 * MIB, `peak too high: ${report}`);
    assert(m.afterKib - m.baselineKib < 90 * MIB, `too high after the flood: ${report}`);
    assert(m.settledKib - m.baselineKib < 16 * MIB, `memory did not come back: ${report}`);
  } finally {
    await server.stop();
  }
});
