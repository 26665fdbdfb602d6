package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs everywhere: the probe answers without crashing, and an unavailable CUDA refuses clearly. */
class CudaAvailabilityTest {

    @Test
    void probeAnswersAndExplains() {
        boolean available = Cuda.available(); // must not throw, with or without the native libraries
        if (available) {
            assertTrue(Cuda.deviceCount() > 0, "available implies at least one device");
            assertEquals("", Cuda.unavailableReason());
        } else {
            assertEquals(0, Cuda.deviceCount());
            assertFalse(Cuda.unavailableReason().isBlank(), "an unavailable CUDA must say why");
            IllegalStateException e = assertThrows(IllegalStateException.class, CudaBackend::new);
            assertTrue(e.getMessage().contains(Cuda.unavailableReason()), e.getMessage());
        }
    }
}
