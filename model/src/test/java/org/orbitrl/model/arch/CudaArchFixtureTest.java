package org.orbitrl.model.arch;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.TestSafetensors;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * DeepSeek-V3 (multi-head latent attention, sigmoid group routing, shared experts) and gpt-oss
 * (sinks, sliding window, biases, clamped SwiGLU) on the CUDA backend against the Hugging Face
 * transformers references of their fixtures, as {@link DeepseekV3FixtureTest} and
 * {@link GptOssFixtureTest} check them on the CPU. Weights, activations and the KV caches live in
 * device memory (the MoE routing decision is copied to the host).
 * <ul>
 *   <li>Exact mode (f32 arithmetic on the exact bf16 weights): logits and every hidden state of a
 *       prefill through the caches within 1e-4 absolute; a 3-token prefill then one token a step,
 *       both sequences batched (past gpt-oss's sliding window of 8), within 1e-4; greedy decoding
 *       through the device cache reproduces {@code greedy.sequence}.</li>
 *   <li>Default kernels (activations rounded to bf16 for products over more than 8 rows, relative
 *       error ≤ 2⁻⁹ per input): training-forward logits within 3e-2 absolute.</li>
 * </ul>
 * Skipped, with the reason, where no CUDA device is present.
 */
class CudaArchFixtureTest {
    private static CudaBackend exact;
    private static CudaBackend fast;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
        fast = new CudaBackend(0, CudaBackend.defaultCacheDir(), false);
    }

    @AfterAll
    static void close() {
        if (exact != null) {
            exact.close();
        }
        if (fast != null) {
            fast.close();
        }
    }

    static Trainable load(String arch, Backend backend) {
        return switch (arch) {
            case "deepseek_v3" -> DeepseekV3FixtureTest.load(backend);
            case "gpt_oss" -> GptOssFixtureTest.model(backend);
            default -> throw new IllegalArgumentException("no fixture loader for " + arch);
        };
    }

    static TestSafetensors reference(String arch) {
        return new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
    }

    private static float[] host(CudaBackend b, Tensor t) {
        return b.toHost(t.contiguous()).toFloatArray();
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3", "gpt_oss"})
    void exactPrefillLogitsAndHiddenStatesMatchTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Trainable model = load(arch, exact);
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] toks : GptOssFixtureTest.inputRows(ref)) {
            batch.add(new CausalLM.Segment(toks, model.newCache(toks.length)));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, host(exact, h)));
        assertTrue(exact.allocator().owns(logits), "logits are device memory");
        Qwen3FixtureTest.assertClose(arch + " logits on cuda (exact)", ref.get("logits").toFloatArray(), host(exact, logits),
                Qwen3FixtureTest.ATOL);
        for (int i = 0; i <= model.layers(); i++) {
            Qwen3FixtureTest.assertClose(arch + " hidden_states." + i + " on cuda (exact)",
                    ref.get("hidden_states." + i).toFloatArray(), hidden.get(i), Qwen3FixtureTest.ATOL);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3", "gpt_oss"})
    void exactTokenByTokenDecodeMatchesTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Trainable model = load(arch, exact);
        List<int[]> rows = GptOssFixtureTest.inputRows(ref);
        int t = rows.get(0).length;
        int v = model.vocabSize();
        List<KvCache> caches = List.of(model.newCache(2), model.newCache(2)); // grow on the device
        float[][] got = new float[rows.size()][t * v];
        int prefill = 3;
        for (int j = 0; j < t; j = j == 0 ? prefill : j + 1) {
            int len = j == 0 ? prefill : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < rows.size(); b++) {
                batch.add(new CausalLM.Segment(Arrays.copyOfRange(rows.get(b), j, j + len), caches.get(b)));
            }
            float[] lg = host(exact, model.forward(batch)); // [B*len, V]
            for (int b = 0; b < rows.size(); b++) {
                System.arraycopy(lg, b * len * v, got[b], j * v, len * v);
            }
        }
        float[] expected = ref.get("logits").toFloatArray(); // [B, T, V]
        for (int b = 0; b < rows.size(); b++) {
            assertEquals(t, caches.get(b).length());
            Qwen3FixtureTest.assertClose(arch + " decode logits on cuda (exact), row " + b,
                    Arrays.copyOfRange(expected, b * t * v, (b + 1) * t * v), got[b], Qwen3FixtureTest.ATOL);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3", "gpt_oss"})
    void defaultKernelLogitsMatchTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Trainable model = load(arch, fast);
        Tensor logits = model.forwardTrain(GptOssFixtureTest.inputRows(ref), false).logits();
        Qwen3FixtureTest.assertClose(arch + " logits on cuda (default kernels)", ref.get("logits").toFloatArray(),
                host(fast, logits), 3e-2f);
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3", "gpt_oss"})
    void greedyDecodingThroughTheDeviceCacheReproducesTransformers(String arch) {
        TestSafetensors ref = reference(arch);
        Trainable model = load(arch, exact);
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        KvCache cache = model.newCache(4);
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
            float[] last = host(exact, logits.select(0, logits.dim(0) - 1));
            int best = 0;
            for (int i = 1; i < last.length; i++) {
                if (last[i] > last[best]) {
                    best = i;
                }
            }
            got.add((long) best);
            next = new int[]{best};
        }
        assertArrayEquals(expected, got.stream().mapToLong(Long::longValue).toArray(), arch + " greedy sequence on cuda");
    }
}
