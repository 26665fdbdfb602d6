/**
 * A job's metrics and its report.
 *
 * <ul>
 *   <li>{@link org.orbitrl.scheduler.report.MetricsLog} appends one JSON object per line to
 *       {@code <job data dir>/metrics.jsonl}: a {@link org.orbitrl.scheduler.report.StepRecord} per
 *       step, an {@link org.orbitrl.scheduler.report.EvalRecord} per evaluation and an
 *       {@link org.orbitrl.scheduler.report.EndRecord} when the job ends. Values a runner does not
 *       measure are NaN in the records and {@code null} in the file; measurements without a field of
 *       their own go into a step's {@code extras}; device memory goes into {@code memory_bytes} by
 *       category.</li>
 *   <li>{@link org.orbitrl.scheduler.report.MetricsHistory} reads the file back, tolerating a torn
 *       last line and steps written twice by a resumed run.</li>
 *   <li>{@link org.orbitrl.scheduler.report.Report} draws PNG charts with JFreeChart (headless: the
 *       {@code java.awt.headless} property is set to {@code true} unless the process chose otherwise)
 *       and writes an {@code index.html} with a summary table and a list of what is missing.</li>
 * </ul>
 */
package org.orbitrl.scheduler.report;
