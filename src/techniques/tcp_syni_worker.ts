/**
 * Worker entry of `tcp-syni`: hosts all of this daemon's tcp-syni attempts.
 *
 * @module
 */

import { TcpSyni } from "./tcp_syni.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new TcpSyni(), self as unknown as WorkerPort);
