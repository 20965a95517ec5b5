import { assertEquals } from "../assert.ts";
import { foldStartup, rssKiB } from "./startup.ts";

Deno.test("startup fold: first, median and p95 of the runs, RSS median in KiB", () => {
  const folded = foldStartup([
    { listenMs: 900.04, idleRssKiB: 60000 },
    { listenMs: 500, idleRssKiB: 50000 },
    { listenMs: 600, idleRssKiB: NaN },
  ]);
  assertEquals(folded.firstMs, 900);
  assertEquals(folded.medianMs, 600);
  assertEquals(folded.p95Ms, 900);
  assertEquals(folded.medianIdleRssKiB, 50000);
  assertEquals(folded.idleRssKiB, [60000, 50000]);
});

Deno.test("startup fold: no runs give no numbers", () => {
  const folded = foldStartup([]);
  assertEquals([folded.firstMs, folded.medianMs, folded.medianIdleRssKiB], [null, null, null]);
});

Deno.test("rss: this process has a resident set; a process that is gone has none", () => {
  assertEquals(rssKiB(Deno.pid) > 1000, true);
  assertEquals(Number.isNaN(rssKiB(2 ** 22 + 1)), true);
});
