package org.orbitrl.scheduler.job;

/** How the reference answer is written in a JSONL dataset's {@code answer} field. */
public enum AnswerFormat {
    /** {@code #### 42} if present, else {@code \boxed{42}} if present, else the whole field. */
    AUTO,
    /** GSM8K style: the answer follows {@code ####}. */
    GSM8K,
    /** The answer is inside {@code \boxed{...}}. */
    BOXED,
    /** The whole field is the answer. */
    PLAIN
}
