package org.orbitrl.scheduler.job;

/** What happens to a sequence in flight when a new adapter version is switched in (async mode). */
public enum PartialRollouts {
    /** It finishes under the new version; its tokens record which version made each of them. */
    CONTINUE,
    /** It is aborted and its prompt regenerated under the new version. */
    ABORT
}
