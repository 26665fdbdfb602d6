package org.orbitrl.kernels;

import java.util.function.Supplier;

/**
 * A step of work recorded once by {@link Backend#captureStep} and replayed: on a device, a graph of
 * the kernels the step issued, reading and writing the same addresses on every replay (its inputs
 * are written into fixed tensors before each replay); on the host, the step run again under
 * {@link CaptureCheck}. Owns the graph and its memory arena until {@link #close}.
 */
public interface CapturedStep extends AutoCloseable {

    /** Runs the step again and returns its output; on a device the same tensor (arena memory) every time. */
    Tensor replay();

    /** Device bytes this step owns (its arena); 0 on the host. */
    long arenaBytes();

    /** Frees the graph and its arena; the output tensor must not be used afterwards. */
    @Override
    void close();

    /** The host form: each replay runs {@code work} again, with capture checking on. */
    static CapturedStep rerun(String what, Supplier<Tensor> work) {
        return new CapturedStep() {
            @Override
            public Tensor replay() {
                return CaptureCheck.during(what, work);
            }

            @Override
            public long arenaBytes() {
                return 0;
            }

            @Override
            public void close() {
            }
        };
    }
}
