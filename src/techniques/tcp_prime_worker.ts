/**
 * Worker entry of `tcp-prime`: hosts all of this daemon's tcp-prime attempts.
 *
 * @module
 */

import { TcpPrime } from "./tcp_prime.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new TcpPrime(), self as unknown as WorkerPort);
