/**
 * Worker entry of `relay`: hosts all of this daemon's relay attempts, and
 * keeps the TURN allocations of the relayed connections they made (the
 * daemon keeps a worker that holds any alive; see src/turn/keeper.ts).
 *
 * @module
 */

import { Logger } from "../log.ts";
import { TurnKeeper } from "../turn/keeper.ts";
import type { FromWorker } from "./protocol.ts";
import { Relay } from "./relay.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

const port = self as unknown as WorkerPort;
const keeper = new TurnKeeper({
  log: new Logger("info", (record) => port.postMessage({ type: "log", record } as FromWorker), {
    technique: "relay",
  }),
  onChange: (count) => port.postMessage({ type: "holding", count }),
});
hostTechnique(new Relay({ keeper }), port);
