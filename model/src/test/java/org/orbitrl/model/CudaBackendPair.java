package org.orbitrl.model;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * An exact-mode and a default-kernel CUDA backend on device 0 for one test class: opened before its
 * first test, closed after its last. Where no CUDA device is present the class is skipped with the
 * reason. Register it as a static field:
 * <pre>{@code @RegisterExtension static final CudaBackendPair GPU = new CudaBackendPair();}</pre>
 */
public final class CudaBackendPair implements BeforeAllCallback, AfterAllCallback {
    private CudaBackend exact;
    private CudaBackend fast;

    @Override
    public void beforeAll(ExtensionContext context) {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
        fast = new CudaBackend(0, CudaBackend.defaultCacheDir(), false);
    }

    @Override
    public void afterAll(ExtensionContext context) {
        try (CudaBackend e = exact; CudaBackend f = fast) {
            exact = null;
            fast = null;
        }
    }

    /** The exact (batch-invariant, f32 arithmetic) backend. */
    public CudaBackend exact() {
        return exact;
    }

    /** The default-kernel backend. */
    public CudaBackend fast() {
        return fast;
    }
}
