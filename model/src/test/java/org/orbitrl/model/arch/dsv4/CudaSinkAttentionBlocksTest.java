package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.orbitrl.model.CudaBackendPair;

/**
 * {@link SinkAttentionBlocksTest}'s comparison on the CUDA backend's default kernels ({@code Backend#sinkAttention}:
 * cuBLAS f32 products around the masked softmax), a block of queries at a time over the keys it sees, against the
 * host's loop over every key. Skipped where there is no CUDA device.
 */
class CudaSinkAttentionBlocksTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    @Test
    void blockedOnTheDefaultKernelsMatchesTheHostsLoop() {
        SinkAttentionBlocksTest.compare(GPU.fast());
    }
}
