/**
 * The CI subset of the traversal grid: a few representative pairs, every
 * technique and auto, two attempts per cell, with the grid's own checks
 * (`make grid` runs every pair).
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { GRID_TECHNIQUES } from "./grid_expect.ts";
import { checkGrid, measurePair, parsePair } from "./grid.ts";

/**
 * One pair per behaviour class: both NATs predictable; random mapping on one
 * side (birthday probing, and TCP's impossibility); no simultaneous open at
 * the responder; a carrier-grade double NAT; both hosts behind one NAT; an
 * IPv6 stateful firewall against NAT66.
 */
export const CI_PAIRS = [
  "preserving:shifting",
  "symmetric:preserving",
  "preserving:nosimopen",
  "double:answering",
  "hairpin:hairpin",
  "firewall:preserving/6",
];

const ATTEMPTS = 2;
const THRESHOLD = 0.5;

const needsRoot = skipUnless(isRoot(), "traversal grid subset", "network namespaces need root");

for (const name of CI_PAIRS) {
  Deno.test({
    name:
      `grid ${name}: every cell meets its expectation and auto keeps up with the best technique`,
    ignore: needsRoot,
  }, async () => {
    const cells = await measurePair(parsePair(name), {
      pairs: [],
      techniques: GRID_TECHNIQUES,
      attempts: ATTEMPTS,
      timeoutS: 6,
      threshold: THRESHOLD,
    });
    assertEquals(checkGrid(cells, THRESHOLD), []);
  });
}
