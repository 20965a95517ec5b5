/**
 * The techniques this daemon knows: name, validation (in the daemon) and the
 * worker module that runs its attempts.
 *
 * @module
 */

import type { TechniqueName } from "../control/codec.ts";
import { TcpDirect } from "./tcp_direct.ts";
import { TcpNutss } from "./tcp_nutss.ts";
import { TcpPrime } from "./tcp_prime.ts";
import { TcpSyni } from "./tcp_syni.ts";
import { Udp } from "./udp.ts";
import { UdpPrime } from "./udp_prime.ts";
import { Relay } from "./relay.ts";
import type { Technique } from "./technique.ts";

/** A technique and where its worker lives. */
export interface TechniqueEntry {
  /** Used in the daemon for validation only; attempts run in the worker. */
  technique: Technique;
  /** The worker module's URL. */
  workerUrl: URL;
}

/** Every technique, by wire name. */
export const TECHNIQUE_REGISTRY: Readonly<Record<TechniqueName, TechniqueEntry>> = {
  "tcp-direct": {
    technique: new TcpDirect(),
    workerUrl: new URL("./tcp_direct_worker.ts", import.meta.url),
  },
  "tcp-nutss": {
    technique: new TcpNutss(),
    workerUrl: new URL("./tcp_nutss_worker.ts", import.meta.url),
  },
  "tcp-syni": {
    technique: new TcpSyni(),
    workerUrl: new URL("./tcp_syni_worker.ts", import.meta.url),
  },
  "tcp-prime": {
    technique: new TcpPrime(),
    workerUrl: new URL("./tcp_prime_worker.ts", import.meta.url),
  },
  udp: {
    technique: new Udp("udp"),
    workerUrl: new URL("./udp_worker.ts", import.meta.url),
  },
  "udp-birthday": {
    technique: new Udp("udp-birthday"),
    workerUrl: new URL("./udp_birthday_worker.ts", import.meta.url),
  },
  "udp-prime": {
    technique: new UdpPrime(),
    workerUrl: new URL("./udp_prime_worker.ts", import.meta.url),
  },
  relay: {
    technique: new Relay(),
    workerUrl: new URL("./relay_worker.ts", import.meta.url),
  },
};
