/**
 * Worker entry of `udp-prime`: hosts all of this daemon's udp-prime attempts.
 *
 * @module
 */

import { UdpPrime } from "./udp_prime.ts";
import { hostTechnique, type WorkerPort } from "./worker_host.ts";

hostTechnique(new UdpPrime(), self as unknown as WorkerPort);
