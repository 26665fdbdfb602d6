package org.orbitrl.model.arch;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.CudaBackendPair;
import org.orbitrl.model.TestSafetensors;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Qwen3 and Qwen3-MoE on the CUDA backend against the Hugging Face transformers references of
 * the fixtures. Weights, activations and the KV cache live in device memory (the MoE routing
 * decision is copied to the host).
 * <ul>
 *   <li>Exact mode (f32 arithmetic on the exact bf16 weights): logits and hidden states within
 *       1e-4 absolute, as on the CPU; greedy decoding through the device KV cache reproduces
 *       {@code greedy.sequence}; the logits of one-token decode steps equal, bit for bit, those of
 *       the whole-sequence training forward (what exact mode promises).</li>
 *   <li>Default kernels (activations rounded to bf16 for products over more than 8 rows, relative
 *       error ≤ 2⁻⁹ per input): logits within 3e-2 absolute (the logits' rms is ~1).</li>
 * </ul>
 * Skipped, with the reason, where no CUDA device is present.
 */
class CudaQwen3Test {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    private static Qwen3Model load(String arch, CudaBackend backend) {
        var dir = TestSafetensors.fixtures().resolve(arch);
        return Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")), backend,
                Qwen3Model.LoadOptions.full());
    }

    private static TestSafetensors reference(String arch) {
        return new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
    }

    private static List<int[]> inputRows(TestSafetensors ref) {
        Tensor ids = ref.get("input_ids"); // [B, T] i64
        List<int[]> out = new ArrayList<>();
        for (int i = 0; i < ids.size(0); i++) {
            int[] toks = new int[ids.size(1)];
            for (int j = 0; j < toks.length; j++) {
                toks[j] = (int) ids.getLong(i, j);
            }
            out.add(toks);
        }
        return out;
    }

    private static float[] host(CudaBackend b, Tensor t) {
        return b.toHost(t.contiguous()).toFloatArray();
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void exactLogitsAndHiddenStatesMatchTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Qwen3Model model = load(arch, GPU.exact());
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] toks : inputRows(ref)) {
            batch.add(new CausalLM.Segment(toks, model.newCache(toks.length)));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, host(GPU.exact(), h)));
        Qwen3FixtureTest.assertClose(arch + " logits on cuda (exact)", ref.get("logits").toFloatArray(),
                host(GPU.exact(), logits), Qwen3FixtureTest.ATOL);
        for (int i = 0; i <= 2; i++) {
            Qwen3FixtureTest.assertClose(arch + " hidden_states." + i + " on cuda (exact)",
                    ref.get("hidden_states." + i).toFloatArray(), hidden.get(i), Qwen3FixtureTest.ATOL);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void defaultKernelLogitsMatchTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Qwen3Model model = load(arch, GPU.fast());
        Tensor logits = model.forwardTrain(inputRows(ref), false).logits();
        Qwen3FixtureTest.assertClose(arch + " logits on cuda (default kernels)", ref.get("logits").toFloatArray(),
                host(GPU.fast(), logits), 3e-2f);
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void greedyDecodingThroughTheDeviceCacheReproducesTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Qwen3Model model = load(arch, GPU.exact());
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        KvCache cache = model.newCache(4); // grows on the device
        int[] next = new int[prompt.length];
        for (int i = 0; i < prompt.length; i++) {
            next[i] = (int) prompt[i];
        }
        List<Long> got = new ArrayList<>();
        for (long p : prompt) {
            got.add(p);
        }
        while (got.size() < expected.length) {
            Tensor logits = model.forward(List.of(new CausalLM.Segment(next, cache)));
            float[] last = host(GPU.exact(), logits.select(0, logits.dim(0) - 1));
            int best = 0;
            for (int v = 1; v < last.length; v++) {
                if (last[v] > last[best]) {
                    best = v;
                }
            }
            got.add((long) best);
            next = new int[]{best};
        }
        assertArrayEquals(expected, got.stream().mapToLong(Long::longValue).toArray(), arch + " greedy sequence on cuda");
        assertEquals(expected.length - 1, cache.length());
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void exactDecodeStepsEqualTheTrainingForwardBitForBit(String arch) {
        TestSafetensors ref = reference(arch);
        Qwen3Model model = load(arch, GPU.exact());
        int[] seq = inputRows(ref).get(1);
        float[] train = host(GPU.exact(), model.forwardTrain(List.of(seq), false).logits()); // [T, V]
        int v = model.vocabSize();
        KvCache cache = model.newCache(2);
        int prefix = 5; // a chunked prefill of 5 tokens, then one token a step
        Tensor first = model.forward(List.of(new CausalLM.Segment(java.util.Arrays.copyOf(seq, prefix), cache)));
        float[] got = host(GPU.exact(), first);
        compareRows(arch, train, got, 0, prefix, v);
        for (int t = prefix; t < seq.length; t++) {
            Tensor step = model.forward(List.of(new CausalLM.Segment(new int[]{seq[t]}, cache)));
            compareRows(arch, train, host(GPU.exact(), step), t, 1, v);
        }
    }

    private static void compareRows(String arch, float[] train, float[] got, int row, int rows, int v) {
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < v; c++) {
                float a = train[(row + r) * v + c];
                float b = got[r * v + c];
                if (Float.floatToRawIntBits(a) != Float.floatToRawIntBits(b)) {
                    fail(arch + ": token " + (row + r) + " logit " + c + ": decode " + b + " vs training forward " + a
                            + " (exact mode must be bit-identical)");
                }
            }
        }
    }
}
