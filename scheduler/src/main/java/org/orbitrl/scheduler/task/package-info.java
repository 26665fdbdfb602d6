/**
 * Verifiable tasks: where prompts come from and how responses are scored.
 *
 * <ul>
 *   <li>{@link org.orbitrl.scheduler.task.Task}: a training stream that is a function of
 *       {@code (seed, step)}, a held-out evaluation split disjoint from it, and a verifier that
 *       returns a {@link org.orbitrl.scheduler.task.Reward} with its breakdown
 *       ({@code correct}, {@code format}; weights in {@link org.orbitrl.scheduler.task.RewardWeights}).</li>
 *   <li>Generated tasks ({@link org.orbitrl.scheduler.task.GeneratedTask}):
 *       {@link org.orbitrl.scheduler.task.Addition}, {@link org.orbitrl.scheduler.task.Sorting},
 *       {@link org.orbitrl.scheduler.task.Countdown}. Each class documents, in one table, its prompt
 *       template, its completion, how the answer is extracted, and what counts as well formed and as
 *       correct. Their prompts and answers are short and regular, for small models with byte-level
 *       vocabularies; answers end with {@link org.orbitrl.scheduler.task.AnswerText#END_MARKER}.
 *       Held-out problems are chosen by a hash of their canonical form
 *       ({@link org.orbitrl.scheduler.task.HeldOutSplit}).</li>
 *   <li>Datasets: {@link org.orbitrl.scheduler.task.JsonlDataset} reads JSONL files and reports
 *       every unusable line; {@link org.orbitrl.scheduler.task.JsonlTask} makes a task of them;
 *       {@link org.orbitrl.scheduler.task.Answers} and {@link org.orbitrl.scheduler.task.Numbers}
 *       find and compare free-form answers.</li>
 *   <li>{@link org.orbitrl.scheduler.task.Evaluation}: accuracy at temperature 0 and pass@k over an
 *       evaluation split.</li>
 * </ul>
 */
package org.orbitrl.scheduler.task;
