package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a DeepSeek V4 decode step asks of a device ({@link DeepseekV4DecodeCensus} on {@link StrictBackend}: the
 * fixture's layer kinds at V4's released window and rates, 8 steps) does not grow with the context, and grows with the
 * batch only by the indexer's one launch a sequence: the same waits for the device (reads back) and the same uploads
 * at 2 and 6 sequences and at 64 and 512 tokens of context, the same bytes uploaded at either context (a closed window
 * uploads its new entries, not every entry again), at most one more allocation a sequence (the closing windows' kept
 * rows gathered), and at most two more operations a sequence on each compressed-sparse layer. Each of these broke
 * before the state was appended in place and its rows, scores and reads batched.
 */
class DeepseekV4DecodeWorkTest {

    @Test
    void aDecodeStepsWorkDoesNotGrowWithTheContextNorTheBatch() throws Exception {
        ModelSpec spec = ConfigLoader.load(DeepseekV4DecodeCensus.releasedWindows(TestSafetensors.fixtures().resolve("deepseek_v4"), 600));
        long sparse = java.util.stream.IntStream.range(0, spec.numLayers())
                .filter(l -> spec.attentionKind(l) == AttentionKind.COMPRESSED_SPARSE).count();
        assertTrue(sparse > 0);
        try (StrictBackend strict = new StrictBackend()) {
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 7), strict);
            DeepseekV4DecodeCensus.count(strict, model, 64, 2, 2);   // once-only work (the sinks' first upload) out of the way
            DeepseekV4DecodeCensus.Counts shortFew = DeepseekV4DecodeCensus.count(strict, model, 64, 2, 8);
            DeepseekV4DecodeCensus.Counts longFew = DeepseekV4DecodeCensus.count(strict, model, 512, 2, 8);
            DeepseekV4DecodeCensus.Counts longMany = DeepseekV4DecodeCensus.count(strict, model, 512, 6, 8);
            String all = "\n64 tokens, 2 sequences: " + shortFew.describe(64) + "\n512 tokens, 2 sequences: "
                    + longFew.describe(512) + "\n512 tokens, 6 sequences: " + longMany.describe(512);
            assertEquals(shortFew.reads(), longFew.reads(), "reads back at 64 and 512 tokens" + all);
            assertEquals(longFew.reads(), longMany.reads(), "reads back at 2 and 6 sequences" + all);
            assertEquals(shortFew.uploads(), longFew.uploads(), "uploads at 64 and 512 tokens" + all);
            assertEquals(shortFew.uploadBytes(), longFew.uploadBytes(), "bytes uploaded at 64 and 512 tokens" + all);
            assertEquals(longFew.uploads(), longMany.uploads(), "uploads at 2 and 6 sequences" + all);
            assertEquals(shortFew.operations(), longFew.operations(), "operations at 64 and 512 tokens" + all);
            assertTrue(longMany.allocations() - longFew.allocations() <= 4L * 8, "allocations of 4 more sequences" + all);
            assertTrue(longMany.operations() - longFew.operations() <= 2 * sparse * 4 * 8, "operations of 4 more sequences" + all);
        }
    }
}
