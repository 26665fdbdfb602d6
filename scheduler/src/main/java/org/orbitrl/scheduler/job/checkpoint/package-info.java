/**
 * Job checkpoints: atomic, checksummed files of named sections.
 *
 * <p>A checkpoint is written to a temporary file, forced to disk, renamed into place and its
 * folder forced, so a crash leaves either the previous set of checkpoints or the new one, never
 * a partial file under a checkpoint's name. Every section and the index carry a CRC-32C; a
 * checkpoint that fails its checks (truncated, corrupt) is set aside and the previous one is
 * used, with a warning.
 *
 * <pre>
 * file    := header, section bytes..., index, footer
 * header  := "ORBITCK1" (8 bytes), u32 format (1), i64 step
 * index   := u32 count, { u16 nameLength, name (UTF-8), i64 offset, i64 length, u32 crc32c }[count]
 * footer  := i64 indexOffset, u32 indexLength, u32 indexCrc32c, i64 step, "ORBITEND" (8 bytes)
 * </pre>
 * Little-endian. The footer is the last 32 bytes; a file whose footer does not check out is not
 * a checkpoint.
 */
package org.orbitrl.scheduler.job.checkpoint;
