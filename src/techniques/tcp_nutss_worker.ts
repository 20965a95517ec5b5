/**
 * Worker entry of `tcp-nutss`: hosts all of this daemon's tcp-nutss attempts.
 *
 * @module
 */

import { TcpNutss } from "./tcp_nutss.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new TcpNutss(), self as unknown as WorkerPort);
