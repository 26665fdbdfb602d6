package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Which launch path a kernel takes (no GPU needed: the choice is made before any driver call): a
 * kernel that waits for its predecessor goes through {@code cuLaunchKernelEx} with programmatic
 * stream serialization exactly while its library's dependent launches are on; every other kernel
 * always through {@code cuLaunchKernel}. And how {@code -Dorbit.cuda.pdl} is read.
 */
class LauncherPathTest {

    @Test
    void flaggedKernelsTakeTheDependentPathWhileOn() {
        KernelLibrary lib = new KernelLibrary(null, 90, true); // nothing is compiled: no launch is issued
        Kernel rmsnorm = lib.kernel("norm", "rmsnorm_f32");
        Kernel qgemv = lib.kernel("qgemv", "qgemv_int4_m1_bf16");
        Kernel gateUp = lib.kernel("qmma", "qmma_int4_gate_up_m8_f32");
        Kernel softmax = lib.kernel("norm", "log_softmax_f32");    // not in a decode step
        Kernel toBf16 = lib.kernel("elementwise", "f32_to_bf16");  // same file as swiglu_f32, not flagged
        Kernel prefill = lib.kernel("flash_attention", "flash_prefill_f32");

        for (Kernel k : new Kernel[]{rmsnorm, qgemv, gateUp}) {
            assertTrue(k.waitsForPredecessor(), k + " waits for its predecessor");
            assertEquals(Launcher.Path.DEPENDENT, Launcher.path(k), k + " with dependent launches on");
        }
        for (Kernel k : new Kernel[]{softmax, toBf16, prefill}) {
            assertFalse(k.waitsForPredecessor(), k + " does not wait for its predecessor");
            assertEquals(Launcher.Path.PLAIN, Launcher.path(k), k + " with dependent launches on");
        }

        lib.dependentLaunches(false);
        for (Kernel k : new Kernel[]{rmsnorm, qgemv, gateUp, softmax, toBf16, prefill}) {
            assertEquals(Launcher.Path.PLAIN, Launcher.path(k), k + " with dependent launches off");
        }
        lib.dependentLaunches(true);
        assertEquals(Launcher.Path.DEPENDENT, Launcher.path(rmsnorm), "switched back on");
    }

    @Test
    void sameNameInAnotherFileIsNotFlagged() {
        KernelLibrary lib = new KernelLibrary(null, 90, true);
        assertTrue(lib.kernel("moe", "moe_route").waitsForPredecessor());
        assertFalse(lib.kernel("moe_train", "moe_route").waitsForPredecessor(), "the flag belongs to a file's kernel");
        assertFalse(lib.kernel("qgemv", "qgemv_int4_m2_f32").waitsForPredecessor(), "no such kernel");
    }

    @Test
    void switchDefaultsOnFromSm90AndOnNeedsIt() {
        assertFalse(KernelLibrary.dependentLaunchesFor(null, 90)); // off unless asked for
        assertFalse(KernelLibrary.dependentLaunchesFor("", 100));
        assertFalse(KernelLibrary.dependentLaunchesFor(null, 89));
        assertFalse(KernelLibrary.dependentLaunchesFor(null, 80));
        assertTrue(KernelLibrary.dependentLaunchesFor("on", 90));
        assertFalse(KernelLibrary.dependentLaunchesFor("off", 90));
        assertFalse(KernelLibrary.dependentLaunchesFor("off", 80));
        IllegalArgumentException old = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.dependentLaunchesFor("on", 80));
        assertTrue(old.getMessage().contains("orbit.cuda.pdl") && old.getMessage().contains("sm_90"), old.getMessage());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.dependentLaunchesFor("yes", 90));
        assertTrue(bad.getMessage().contains("orbit.cuda.pdl=yes"), bad.getMessage());

        KernelLibrary ampere = new KernelLibrary(null, 80, false);
        assertFalse(ampere.dependentLaunchesSupported(), "sm_80 kernels have no griddepcontrol");
        assertTrue(new KernelLibrary(null, 90, false).dependentLaunchesSupported(), "sm_90 kernels may wait, even while off");
        assertThrows(IllegalArgumentException.class, () -> ampere.dependentLaunches(true));
        assertFalse(ampere.dependentLaunches());
        assertEquals(Launcher.Path.PLAIN, Launcher.path(ampere.kernel("norm", "rmsnorm_f32")));
    }
}
