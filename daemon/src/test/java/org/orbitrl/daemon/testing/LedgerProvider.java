package org.orbitrl.daemon.testing;

import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;

/** Provides {@link LedgerRunner} under the runner name {@code ledger}. */
public final class LedgerProvider implements JobRunnerProvider {
    @Override
    public String name() {
        return "ledger";
    }

    @Override
    public JobRunner create(JobContext context) {
        return new LedgerRunner(context);
    }
}
