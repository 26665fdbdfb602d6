/**
 * Not API: how each architecture's weights are laid out, and the activation model the planner
 * uses. Use {@link org.orbitrl.memory.plan.WeightInventory} and
 * {@link org.orbitrl.memory.plan.MemoryPlanner} instead.
 */
package org.orbitrl.memory.plan.internal;
