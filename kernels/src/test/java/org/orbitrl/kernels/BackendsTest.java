package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.cuda.Cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Choosing a backend by name: the host ones, CUDA where present, and clear errors otherwise. */
class BackendsTest {

    @Test
    void hostBackendsByName() {
        try (Backend b = Backends.named("cpu")) {
            assertInstanceOf(CpuBackend.class, b);
        }
        try (Backend b = Backends.named(" Scalar ")) {
            assertInstanceOf(ScalarBackend.class, b);
        }
    }

    @Test
    void unknownNamesAreRefusedWithTheChoices() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Backends.named("tpu"));
        assertTrue(e.getMessage().contains("'tpu'") && e.getMessage().contains("cuda:N"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Backends.named("cuda:first"));
        assertTrue(e.getMessage().contains("cuda:N"), e.getMessage());
    }

    @Test
    void cudaIsChosenWhereAGpuIsPresentAndExplainedWhereNot() {
        if (Cuda.available()) {
            try (Backend b = Backends.named("cuda")) {
                assertEquals("cuda:0", b.name());
            }
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.named("cuda:" + Cuda.deviceCount()));
            assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        } else {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.named("cuda"));
            assertTrue(e.getMessage().contains("needs a CUDA GPU") && e.getMessage().contains(Cuda.unavailableReason()),
                    e.getMessage());
        }
    }
}
