package org.orbitrl.scheduler.task;

/** How the reference answer is written in a dataset's {@code answer} field. */
public enum ReferenceFormat {
    /**
     * {@code #### 42} if the field has {@code ####}, else the last {@code \boxed{42}} if it has one,
     * else the whole field.
     */
    AUTO,
    /** GSM8K style: the answer is the rest of the line after the last {@code ####}. */
    GSM8K,
    /** The answer is the content of the last {@code \boxed{...}}. */
    BOXED,
    /** The whole field, stripped, is the answer. */
    PLAIN
}
