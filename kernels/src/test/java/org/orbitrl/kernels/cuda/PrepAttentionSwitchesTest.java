package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.kernels.cuda.CudaTestBase.valueWithProperty;

/**
 * The switches of the decode attention with its preparation folded in (no GPU needed): {@code orbit.cuda.prepAttention}
 * (on by default, off, or a cluster size from 1 to 16) and {@code orbit.cuda.prepMerge} (the splits merged in a cluster
 * by default, or on a ticket), each a clear error naming the property where mistyped.
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

    @Test
    void theMergeSwitch() {
        assertFalse(valueWithProperty(CudaFlashAttention.PREP_MERGE_PROPERTY, null, CudaFlashAttention::ticketedPrepMerge), "a cluster by default");
        assertFalse(valueWithProperty(CudaFlashAttention.PREP_MERGE_PROPERTY, "cluster", CudaFlashAttention::ticketedPrepMerge));
        assertTrue(valueWithProperty(CudaFlashAttention.PREP_MERGE_PROPERTY, "tickets", CudaFlashAttention::ticketedPrepMerge));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> valueWithProperty(CudaFlashAttention.PREP_MERGE_PROPERTY, "ticket", CudaFlashAttention::ticketedPrepMerge));
        assertTrue(e.getMessage().contains("orbit.cuda.prepMerge=ticket") && e.getMessage().contains("cluster or tickets"), e.getMessage());
    }
}
