package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The timing aid {@code -Dorbit.cuda.omitKernels} (no GPU needed): a launch whose kernel name matches returns before any
 * compile or driver call, one that does not match goes on to them (here a library without a compiler, where that fails:
 * without a GPU at the native libraries, with one at the missing compiler), and a malformed pattern is an error that
 * names the property.
 */
class LauncherOmitTest {
    private String before;

    @BeforeEach
    void save() {
        before = System.getProperty(Launcher.OMIT_PROPERTY);
    }

    @AfterEach
    void restore() {
        if (before == null) {
            System.clearProperty(Launcher.OMIT_PROPERTY);
        } else {
            System.setProperty(Launcher.OMIT_PROPERTY, before);
        }
    }

    @Test
    void matchingLaunchesAreLeftOutAndTheOthersAreIssued() {
        KernelLibrary lib = new KernelLibrary(null, 90, false); // no compiler: a launch that goes on fails at the module
        Kernel route = lib.kernel("moe", "moe_route");
        Kernel router = lib.kernel("moe", "moe_router_norm_topk");

        System.clearProperty(Launcher.OMIT_PROPERTY);
        assertFalse(Launcher.omitted("moe_route"), "nothing is left out by default");
        assertThrows(Throwable.class, () -> Launcher.launch(route, null, 1, 1, 32, 0), "an issued launch goes on to the driver");

        System.setProperty(Launcher.OMIT_PROPERTY, "moe_route$|gate_up");
        assertTrue(Launcher.omitted("moe_route"));
        assertTrue(Launcher.omitted("qmma_int4_gate_up_lora_m8_f32"), "a match anywhere in the name");
        assertFalse(Launcher.omitted("moe_router_norm_topk"));
        assertFalse(Launcher.omitted("cublas"));
        Launcher.launch(route, null, 1, 1, 32, 0); // left out: no compile, no driver call
        assertThrows(Throwable.class, () -> Launcher.launch(router, null, 1, 1, 32, 0), "not matched: issued");

        System.setProperty(Launcher.OMIT_PROPERTY, "cublas");
        assertTrue(Launcher.omitted("cublas"), "the pattern is read again at each launch");
        assertFalse(Launcher.omitted("moe_route"));
    }

    @Test
    void aMalformedPatternNamesTheProperty() {
        System.setProperty(Launcher.OMIT_PROPERTY, "moe_(route");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Launcher.omitted("moe_route"));
        assertTrue(e.getMessage().contains(Launcher.OMIT_PROPERTY) && e.getMessage().contains("moe_(route"), e.getMessage());
    }
}
