/**
 * Worker entry of `tcp-direct`: hosts all of this daemon's tcp-direct attempts.
 *
 * @module
 */

import { TcpDirect } from "./tcp_direct.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new TcpDirect(), self as unknown as WorkerPort);
