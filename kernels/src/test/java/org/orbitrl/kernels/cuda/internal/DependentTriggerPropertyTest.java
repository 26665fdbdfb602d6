package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code -Dorbit.cuda.pdlTrigger}: {@code exit} builds the kernels with {@code ORBIT_PDL_TRIGGER_AT_EXIT} defined ahead
 * of the source NVRTC compiles, {@code start} or unset builds them as before, anything else is refused naming the property
 * and its values.
 */
class DependentTriggerPropertyTest {

    @Test
    void exitDefinesTheSwitchAheadOfTheSourceAndStartLeavesItAsBefore() {
        assertTrue(KernelLibrary.triggerAtExit("exit"));
        assertFalse(KernelLibrary.triggerAtExit("start"));
        assertFalse(KernelLibrary.triggerAtExit(null));
        assertFalse(KernelLibrary.triggerAtExit(""));
        String plain = KernelLibrary.source("norm");
        assertEquals(plain, KernelLibrary.source("norm", false));
        String exit = KernelLibrary.source("norm", true);
        assertTrue(exit.startsWith("#define ORBIT_PDL_TRIGGER_AT_EXIT 1\n") && exit.endsWith(plain), "the define, then the same text");
        assertTrue(plain.contains("#ifndef ORBIT_PDL_TRIGGER_AT_EXIT"), "common.cuh's pdl_enter() reads the switch");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.triggerAtExit("late"));
        assertTrue(e.getMessage().contains("orbit.cuda.pdlTrigger") && e.getMessage().contains("start or exit"), e.getMessage());
    }
}
