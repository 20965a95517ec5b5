/**
 * Worker entry of `udp`: hosts all of this daemon's udp attempts.
 *
 * @module
 */

import { Udp } from "./udp.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new Udp("udp"), self as unknown as WorkerPort);
