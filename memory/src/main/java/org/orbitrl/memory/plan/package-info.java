/**
 * The memory planner: from a model spec, base format, adapter, batch shape, node and parallel
 * layout, the bytes each GPU needs per {@link org.orbitrl.kernels.MemoryCategory}, the parameter
 * counts by family, and the refusal (with computed suggestions) of a job that does not fit.
 * Entry points: {@link org.orbitrl.memory.plan.MemoryPlanner}, {@link org.orbitrl.memory.plan.ParamCounts},
 * {@link org.orbitrl.memory.plan.KvCacheLayout}.
 */
package org.orbitrl.memory.plan;
