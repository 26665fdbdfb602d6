package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.kernels.cuda.CudaTestBase.valueWithProperty;

/**
 * The switch of the decode attention with its preparation folded in (no GPU needed): {@code orbit.cuda.prepAttention}
 * (on by default, off, or a cluster size from 1 to 16), a clear error naming the property where mistyped.
 */
class PrepAttentionSwitchesTest {

    @Test
    void theClusterSwitch() {
        assertEquals(0, valueWithProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, null, CudaFlashAttention::prepCluster), "on by default");
        assertEquals(-1, valueWithProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, "off", CudaFlashAttention::prepCluster));
        assertEquals(5, valueWithProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, "5", CudaFlashAttention::prepCluster));
        for (String bad : new String[]{"0", "17", "many"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> valueWithProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, bad, CudaFlashAttention::prepCluster));
            assertTrue(e.getMessage().contains("orbit.cuda.prepAttention=" + bad), e.getMessage());
        }
    }
}
