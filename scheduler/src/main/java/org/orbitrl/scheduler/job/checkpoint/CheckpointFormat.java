package org.orbitrl.scheduler.job.checkpoint;

import java.nio.charset.StandardCharsets;

/** Constants of the checkpoint file layout (see the package documentation). */
final class CheckpointFormat {
    static final byte[] HEADER_MAGIC = "ORBITCK1".getBytes(StandardCharsets.US_ASCII);
    static final byte[] FOOTER_MAGIC = "ORBITEND".getBytes(StandardCharsets.US_ASCII);
    static final int FORMAT = 1;
    static final int HEADER_BYTES = 8 + 4 + 8;
    static final int FOOTER_BYTES = 8 + 4 + 4 + 8 + 8;
    static final int MAX_SECTIONS = 4096;
    static final int MAX_NAME_BYTES = 255;

    private CheckpointFormat() {
    }

    /** File name of the checkpoint of a step: sorts by step. */
    static String fileName(long step) {
        return String.format("ckpt-%012d.orbit", step);
    }

    /** The step a checkpoint file name gives, or -1 if it is not a checkpoint's name. */
    static long stepOf(String fileName) {
        if (!fileName.startsWith("ckpt-") || !fileName.endsWith(".orbit") || fileName.length() != 5 + 12 + 6) {
            return -1;
        }
        try {
            return Long.parseLong(fileName.substring(5, 17));
        } catch (NumberFormatException e) {
            return -1;
        }
    }
}
