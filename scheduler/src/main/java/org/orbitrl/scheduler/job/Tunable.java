package org.orbitrl.scheduler.job;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Marks a job-file field that may change while the job runs (from an edited job file, JMX or
 * {@code orbitctl set}). Every other field is fixed for the life of a job: a changed job file
 * that touches one is refused with a message and the job keeps its running values.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.RECORD_COMPONENT)
public @interface Tunable {
}
