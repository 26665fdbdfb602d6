/**
 * The device arena: every device (and, on the CPU backend, off-heap) allocation, tagged with its
 * {@link org.orbitrl.kernels.MemoryCategory} and job, accounted and held to the memory plan.
 */
package org.orbitrl.memory.arena;
