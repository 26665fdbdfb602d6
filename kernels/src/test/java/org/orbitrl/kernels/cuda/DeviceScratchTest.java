package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The closed forms of the CUDA backend's kept scratch ({@link DeviceScratch}) against sums worked
 * out by hand at the Qwen3-30B-A3B training shape (8 x 2048 tokens, vocab 151,936, hidden 2048,
 * 32 query and 4 kv heads of 128, 40,960 positions). Exact (integer arithmetic).
 */
class DeviceScratchTest {
    @Test
    void stagingIsTheOperandUpToTheLimitThenTheLimit() {
        // the head's dy [16384, 151936] f32 would be 4.98 GB in bf16: staged 883 rows at a time in 256 MiB
        assertEquals(883, DeviceScratch.stagingRows(16384, 151936));   // 134,217,728 / 151,936 = 883.4
        assertEquals(268_435_456L, DeviceScratch.stagingBytes(new long[]{16384, 151936}));
        // the attention projections' operands fit whole: [16384, 4096] bf16 = 134,217,728 B
        assertEquals(134_217_728L, DeviceScratch.stagingBytes(new long[]{16384, 2048}, new long[]{16384, 4096}));
        assertEquals(16384, DeviceScratch.stagingRows(16384, 4096));
        // the largest request wins; small ones are rounded up to 1024 values
        assertEquals(268_435_456L, DeviceScratch.stagingBytes(new long[]{16384, 4096}, new long[]{16384, 151936}));
        assertEquals(2048, DeviceScratch.stagingBytes(new long[]{3, 5}));
        assertEquals(0, DeviceScratch.stagingBytes(new long[]{0, 5}));
    }

    @Test
    void aRowLargerThanTheLimitIsStagedAlone() {
        long old = DeviceScratch.stagingLimit(1000);   // 500 values
        try {
            assertEquals(1, DeviceScratch.stagingRows(7, 600));
            assertEquals(600, DeviceScratch.stagingElements(7, 600));
            assertEquals(2, DeviceScratch.stagingRows(7, 250));
            assertEquals(500, DeviceScratch.stagingElements(7, 250));
            assertEquals(3 * 100, DeviceScratch.stagingElements(3, 100));
        } finally {
            DeviceScratch.stagingLimit(old);
        }
    }

    @Test
    void attentionBackwardAndRopeTables() {
        // T = S = 2048, 32/4 heads, D = 128: the f32 tiled kernels split 4 ways (64 key tiles x 4 kv heads x 4
        // = 1024 blocks), the tensor-core kernels too (32 tiles of 64 keys x 4 x 4 = 512 blocks; bf16: 16 tiles
        // of 128 keys x 4 x 4 = 256 blocks); lse and delta 2·2048·32 = 131,072 values, partial dk and dv
        // 4·2048·4·(128 + 128) = 8,388,608 values; the default bf16v4 kernels' bf16 copies of q, dout
        // (2·2048·32·128) and k, v (2·2048·4·128): 18,874,368 values of 2 bytes
        assertEquals(4L * (131_072 + 8_388_608) + 2L * 18_874_368, DeviceScratch.attentionBackwardBytes(2048, 2048, 32, 4, 128, 128));
        // head dims the tensor-core kernels do not take: the tiled kernels' 4 splits
        assertEquals(4L * (131_072 + 4L * 2048 * 4 * 192), DeviceScratch.attentionBackwardBytes(2048, 2048, 32, 4, 96, 96));
        // 128 keys: 4 tiles x 4 x 8 = 128 blocks < 1024, so the whole group of 8 splits; bf16 copies
        // 2·128·32·128 + 2·128·4·128 = 1,179,648 values
        assertEquals(4L * (2 * 128 * 32 + 8L * 128 * 4 * 256) + 2L * 1_179_648,
                DeviceScratch.attentionBackwardBytes(128, 128, 32, 4, 128, 128));
        // one query head a kv head: no split, lse and delta only (rounded up to 1024 values); bf16
        // copies 2·16·4·64 + 2·16·4·64 = 16,384 values
        assertEquals(4096 + 2L * 16_384, DeviceScratch.attentionBackwardBytes(16, 16, 4, 4, 64, 64));
        assertEquals(2L * 40960 * 64 * 4, DeviceScratch.ropeTableBytes(40960, 128));
        // the default forward's bf16 copies of k and v: 2·2048·4·128 values; none where D is not 64 or 128
        assertEquals(2L * 2 * 2048 * 4 * 128, DeviceScratch.attentionForwardBytes(2048, 4, 128, 128));
        assertEquals(0, DeviceScratch.attentionForwardBytes(2048, 4, 96, 96));
    }

    @Test
    void attentionStagingOfTheBf16Variants() {
        // bf16v3/v4 backward: q and dout [2048, 32, 128], k and v [2048, 4, 128], bf16
        assertEquals(2L * 2048 * 32 * 128 + 2L * 2048 * 4 * 128, CudaMmaAttention.stagingElements("bf16v4", 2048, 2048, 32, 4, 128));
        assertEquals(2L * 2048 * 32 * 128 + 2L * 2048 * 4 * 128, CudaMmaAttention.stagingElements("bf16v3", 2048, 2048, 32, 4, 128));
        assertEquals(0, CudaMmaAttention.stagingElements("bf16v2", 2048, 2048, 32, 4, 128));
        // bf16v4 forward: k and v only
        assertEquals(2L * 2048 * 4 * 128, CudaMmaAttention.forwardStagingElements("bf16v4", 2048, 4, 128));
        assertEquals(0, CudaMmaAttention.forwardStagingElements("bf16", 2048, 4, 128));
        // the 64-key blocks of bf16v4 split as the others at this shape: 32 tiles x 4 kv heads x 4 = 512 blocks
        assertEquals(4, CudaMmaAttention.splits(2048, 32, 4, 64, 512));
    }
}
