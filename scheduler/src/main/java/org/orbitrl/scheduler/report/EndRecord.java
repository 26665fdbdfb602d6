package org.orbitrl.scheduler.report;

import java.time.Instant;

/**
 * The last line a job writes to {@code metrics.jsonl} ({@code "type": "end"}). Its absence tells
 * the report that the job is still running or died.
 *
 * @param step    the last step completed
 * @param time    when the job ended
 * @param status  {@code completed}, {@code stopped} or {@code failed}
 * @param message a reason for {@code stopped} or {@code failed}, else empty
 */
public record EndRecord(long step, Instant time, String status, String message) {
}
