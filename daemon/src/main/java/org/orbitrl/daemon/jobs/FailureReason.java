package org.orbitrl.daemon.jobs;

import java.nio.file.FileSystemException;
import org.orbitrl.scheduler.job.JobException;

/** One line saying why a job failed, from whatever was thrown. */
final class FailureReason {
    private FailureReason() {
    }

    static String of(Throwable t) {
        if (t instanceof JobException) {
            return t.getMessage();
        }
        if (t instanceof FileSystemException fse) {
            return (fse.getReason() == null ? "I/O error" : fse.getReason()) + ": " + fse.getFile()
                    + (fse.getOtherFile() == null ? "" : " -> " + fse.getOtherFile());
        }
        if (t instanceof OutOfMemoryError) {
            return "out of memory (" + t.getMessage() + "); give the daemon a larger heap (-Xmx) or the job a smaller batch";
        }
        if (t instanceof InternalError && String.valueOf(t.getMessage()).contains("unsafe memory access")) {
            return "a memory-mapped file could not be written (" + t.getMessage()
                    + "); the disk holding the data directory is probably full";
        }
        String msg = t.getMessage();
        StringBuilder sb = new StringBuilder(msg == null ? t.getClass().getSimpleName() : msg);
        for (Throwable c = t.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            if (c.getMessage() != null && !sb.toString().contains(c.getMessage())) {
                sb.append(": ").append(c.getMessage());
            }
        }
        return sb.toString();
    }
}
