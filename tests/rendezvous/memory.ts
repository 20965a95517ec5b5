/**
 * A registration flood against a spawned rendezvous server, measuring its
 * RSS, shared by the memory test and the memory benchmark.
 *
 * @module
 */

import { LinePeer } from "./peers.ts";
import type { ServerProcess } from "./spawn.ts";

/** RSS in KiB at rest, at the flood's peak, 3 s after it, and once settled. */
export interface FloodMemory {
  baselineKib: number;
  peakKib: number;
  afterKib: number;
  /** The lowest RSS within `settleMs` after the flood (the garbage collector takes its time). */
  settledKib: number;
  /** Milliseconds from the end of the flood to `settledKib`. */
  settledAfterMs: number;
  seconds: number;
}

async function round(server: ServerProcess, batch: number, tag: string): Promise<void> {
  const peers: LinePeer[] = [];
  try {
    // Connect in groups that fit the listen backlog.
    for (let i = 0; i < batch; i += 200) {
      const group = await Promise.all(
        Array.from({ length: Math.min(200, batch - i) }, () => LinePeer.connect(server.address)),
      );
      peers.push(...group);
    }
    await Promise.all(peers.map(async (peer, i) => {
      const [reply] = await peer.ask(`register|${tag}-${i}`, 1, 20_000);
      if (reply !== `ok|register|${tag}-${i}`) throw new Error(`register: ${reply}`);
      await peer.ask(`publish|tcp|10.0.0.1|4000,4001`, 1, 20_000);
    }));
  } finally {
    for (const peer of peers) peer.close();
  }
}

/**
 * `rounds` rounds of `batch` connections that register, publish and close;
 * then waits up to `settleMs` for RSS to come within `targetKib` of the
 * baseline.
 */
export async function registrationFlood(
  server: ServerProcess,
  rounds: number,
  batch: number,
  settleMs = 3000,
  targetKib = 0,
): Promise<FloodMemory> {
  const started = performance.now();
  await round(server, Math.min(batch, 100), "warmup");
  await new Promise((r) => setTimeout(r, 1000));
  const baselineKib = server.rssKib();
  let peakKib = baselineKib;
  for (let r = 0; r < rounds; r++) {
    await round(server, batch, `r${r}`);
    peakKib = Math.max(peakKib, server.rssKib());
  }
  const ended = performance.now();
  let afterKib = NaN;
  let settledKib = Infinity;
  let settledAfterMs = 0;
  while (performance.now() - ended < Math.max(settleMs, 3000)) {
    await new Promise((r) => setTimeout(r, 250));
    const rss = server.rssKib();
    const elapsed = performance.now() - ended;
    if (Number.isNaN(afterKib) && elapsed >= 3000) afterKib = rss;
    if (rss < settledKib) {
      settledKib = rss;
      settledAfterMs = Math.round(elapsed);
    }
    if (!Number.isNaN(afterKib) && settledKib - baselineKib <= targetKib) break;
  }
  return {
    baselineKib,
    peakKib,
    afterKib,
    settledKib,
    settledAfterMs,
    seconds: (performance.now() - started) / 1000,
  };
}
