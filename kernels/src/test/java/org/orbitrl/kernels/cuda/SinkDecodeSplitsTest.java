package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The key splits of DeepSeek V4's decode attention ({@link CudaSinkDecode#decodeSplits(int, int, int, int)}), on the
 * host: on an H100's 132 multiprocessors, blocks of 8 heads, one split while the sequences' blocks already give every
 * multiprocessor two, else as many as keep the blocks within that, each split at least two tiles (32 keys) of the
 * longest sequence.
 */
class SinkDecodeSplitsTest {
    @Test
    void splitsFillTheDeviceAndKeepTwoTilesASplit() {
        assertEquals(33, CudaSinkDecode.decodeSplits(1, 64, 1713, 132), "one sequence of 64 heads: 8 blocks, 33 splits");
        assertEquals(16, CudaSinkDecode.decodeSplits(2, 64, 1504, 132), "two sequences");
        assertEquals(13, CudaSinkDecode.decodeSplits(2, 64, 387, 132), "two sequences, 32 keys a split at least");
        assertEquals(1, CudaSinkDecode.decodeSplits(1, 64, 20, 132), "fewer keys than two tiles");
        assertEquals(1, CudaSinkDecode.decodeSplits(32, 64, 400, 132), "32 sequences: 256 blocks already");
        assertEquals(1, CudaSinkDecode.decodeSplits(33, 64, 4000, 132), "33 sequences: more than two blocks an SM");
        assertEquals(66, CudaSinkDecode.decodeSplits(1, 32, 100000, 132), "32 heads: 4 blocks, 66 splits");
        assertEquals(88, CudaSinkDecode.decodeSplits(1, 24, 100000, 132), "24 heads: 3 blocks, 88 splits");
    }
}
