package org.orbitrl.scheduler.log;

/** Why generation of a sample ended. Codes are part of the log format and never change. */
public enum FinishReason {
    /** A stop token or stop string. */
    STOP(1),
    /** The response reached its token limit. */
    LENGTH(2),
    /** Generation was cut off (the job stopped, or a version switch aborted it). */
    ABORTED(3);

    private final int code;

    FinishReason(int code) {
        this.code = code;
    }

    /** The byte written to the log. */
    public int code() {
        return code;
    }

    /** The reason a log byte stands for. */
    public static FinishReason ofCode(int code) {
        for (FinishReason r : values()) {
            if (r.code == code) {
                return r;
            }
        }
        throw new IllegalArgumentException("unknown finish reason code " + code);
    }
}
