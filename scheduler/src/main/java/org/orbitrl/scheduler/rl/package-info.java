/**
 * The mathematics of one RL update, as small pure functions over plain arrays: group-relative
 * advantages ({@link org.orbitrl.scheduler.rl.GrpoAdvantage}, {@link org.orbitrl.scheduler.rl.DrGrpoAdvantage},
 * {@link org.orbitrl.scheduler.rl.RlooAdvantage}), policy losses with their closed-form gradients
 * with respect to every token log-probability ({@link org.orbitrl.scheduler.rl.PpoClipLoss},
 * {@link org.orbitrl.scheduler.rl.GspoLoss}, {@link org.orbitrl.scheduler.rl.PolicyGradientLoss}),
 * the KL penalty to the reference policy ({@link org.orbitrl.scheduler.rl.KlPenalty}), train/rollout
 * mismatch corrections ({@link org.orbitrl.scheduler.rl.TruncatedImportanceSampling},
 * {@link org.orbitrl.scheduler.rl.MaskedImportanceSampling}), the optimizer
 * ({@link org.orbitrl.scheduler.rl.AdamW}, {@link org.orbitrl.scheduler.rl.GradientClipping},
 * {@link org.orbitrl.scheduler.rl.LearningRateSchedule}) and evaluation estimators
 * ({@link org.orbitrl.scheduler.rl.PassAtK}, {@link org.orbitrl.scheduler.rl.Accuracy}).
 *
 * <h2>Layout</h2>
 * Per-token quantities of a batch of sequences are row-major {@code float[]} arrays of shape
 * {@code [sequences, tokens]} (padded to the longest response), with a 0/1 loss mask of the same
 * shape. Values at masked-out positions are never read, so padding may hold anything (NaN
 * included). Internal arithmetic is in double; per-token outputs are f32.
 *
 * <h2>Gradient accumulation</h2>
 * A batch is split into micro-batches by whole sequences. The loss normaliser
 * ({@link org.orbitrl.scheduler.rl.Normaliser}) is computed once over the full batch and passed to
 * every micro-batch, so the per-token gradients of a micro-batch are bit-identical to the same
 * tokens' gradients in the full batch, and the micro-batch losses sum to the full-batch loss.
 */
package org.orbitrl.scheduler.rl;
