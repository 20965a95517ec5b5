/**
 * Worker entry of `udp-birthday`: hosts all of this daemon's udp-birthday attempts.
 *
 * @module
 */

import { Udp } from "./udp.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new Udp("udp-birthday"), self as unknown as WorkerPort);
