package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;

import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The rollout's forwards release every activation they allocate: a prefill into paged caches and
 * into contiguous caches, decode steps over the paged pool, and a forward without caches, of a small
 * random Qwen3-MoE model (INT4 experts in chunks, LoRA on attention and experts), leave no activation
 * unreleased once the caller releases the logits (counted by {@link ReleasedOnlyAllocator}, never
 * credited by the collector), and give bit for bit the logits of the same run whose releases are
 * ignored, while released tensors are poisoned (NaN) here: a use after release would show.
 */
class ForwardReleasesTest {

    /** Host memory whose release keeps the tensor as it is: the reference run. */
    private static final class Keeping implements TensorAllocator {
        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            return Tensor.allocate(Arena.ofAuto(), dtype, shape);
        }

        @Override
        public void release(Tensor t) {
            // kept: the collector frees it
        }
    }

    @Test
    void prefillAndDecodeReleaseEveryActivation() throws Exception {
        assertTrue(TensorAllocator.poisonReleased(), "released host tensors must be poisoned in the test JVM");
        List<float[]> want = run(new ReleasedOnlyAllocator(new Keeping(), false), null);
        List<String> left = new ArrayList<>();
        List<float[]> got = run(new ReleasedOnlyAllocator(TensorAllocator.heap(), false), left);
        assertTrue(left.isEmpty(), "activations allocated by a forward and never released: " + left);
        assertEquals(want.size(), got.size());
        for (int i = 0; i < want.size(); i++) {
            float[] w = want.get(i);
            float[] g = got.get(i);
            assertEquals(w.length, g.length, "forward " + i + " logits");
            for (int j = 0; j < w.length; j++) {
                if (Float.isNaN(w[j])) {
                    fail("forward " + i + ": reference logit [" + j + "] is NaN");
                }
                if (Float.floatToRawIntBits(w[j]) != Float.floatToRawIntBits(g[j])) {
                    fail("forward " + i + ": first difference at [" + j + "]: " + g[j] + " with releases, " + w[j] + " without");
                }
            }
        }
        System.out.println(got.size() + " forwards (prefill, decode, no cache): no activation left unreleased, logits bit for bit");
    }

    /** The logits of each forward; with {@code left} non-null, what each forward left unreleased. */
    private static List<float[]> run(ReleasedOnlyAllocator mem, List<String> left) throws Exception {
        PlannedPeaksTest.Shape s = new PlannedPeaksTest.Shape(2, 64, 4, 2, 16, 128, 8, 2, 32, 96);
        Path dir = Files.createTempDirectory("orbit-forward-releases");
        Path cfg = dir.resolve("config.json");
        Files.writeString(cfg, """
                {
                  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                  "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "head_dim": 16, "intermediate_size": 128, "vocab_size": 96,
                  "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": true,
                  "decoder_sparse_step": 1, "mlp_only_layers": [],
                  "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                  "attention_bias": false, "tie_word_embeddings": false, "hidden_act": "silu"
                }
                """);
        DecoderConfig dc = DecoderConfig.from(ConfigLoader.load(cfg));
        Files.delete(cfg);
        Files.delete(dir);
        List<float[]> out = new ArrayList<>();
        try (CpuBackend backend = new CpuBackend(1, mem)) {
            var int4 = QuantFormats.byName("int4-g32");
            Qwen3Model model = Qwen3Model.load(dc, new PlannedPeaksTest.RandomWeights(s, 5), backend,
                    new Qwen3Model.LoadOptions(w -> Weight.of(int4.quantize(w))));
            model.setExpertChunk(3);
            LoraAdapter adapter = LoraAdapter.create(AdapterConfig.lora(4, 8, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                    List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj")), model, mem, 3);
            randomize(adapter);
            SplittableRandom rnd = new SplittableRandom(17);
            BlockPool pool = new BlockPool(mem, 2, 2, 16, 16, 4, 16);
            List<PagedSequence> paged = List.of(new PagedSequence(pool), new PagedSequence(pool));
            List<KvCache> contiguous = List.of(model.newCache(8), model.newCache(8));
            int[] lengths = {7, 3};
            List<CausalLM.Segment> prefill = new ArrayList<>();
            List<CausalLM.Segment> prefillContiguous = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                int[] tokens = rnd.ints(lengths[i], 0, s.vocab()).toArray();
                prefill.add(new CausalLM.Segment(tokens, paged.get(i)));
                prefillContiguous.add(new CausalLM.Segment(tokens, contiguous.get(i)));
            }
            out.add(forward(model, mem, prefill, "paged prefill", left));
            out.add(forward(model, mem, prefillContiguous, "contiguous prefill", left));
            for (int step = 0; step < 3; step++) {
                List<CausalLM.Segment> decode = new ArrayList<>();
                List<CausalLM.Segment> decodeContiguous = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    int[] token = {rnd.nextInt(s.vocab())};
                    decode.add(new CausalLM.Segment(token, paged.get(i)));
                    decodeContiguous.add(new CausalLM.Segment(token, contiguous.get(i)));
                }
                out.add(forward(model, mem, decode, "paged decode step " + step, left));
                out.add(forward(model, mem, decodeContiguous, "contiguous decode step " + step, left));
            }
            out.add(forward(model, mem, List.of(new CausalLM.Segment(rnd.ints(5, 0, s.vocab()).toArray(), null)), "no cache", left));
            for (PagedSequence p : paged) {
                p.close();
            }
        }
        return out;
    }

    private static float[] forward(Qwen3Model model, ReleasedOnlyAllocator mem, List<CausalLM.Segment> batch, String what,
                                   List<String> left) {
        mem.restart();
        Tensor logits = model.forward(batch);   // [N, vocab]
        float[] v = mem.toHost(logits).toFloatArray();
        mem.release(logits);
        mem.endStep();
        long bytes = mem.leftByLastStep();
        if (left != null && bytes > 0) {
            left.add(what + ": " + bytes + " B");
        }
        return v;
    }

    /** Seeded values in every LoRA parameter (B included), so that the adapters change the logits. */
    private static void randomize(LoraAdapter adapter) {
        SplittableRandom r = new SplittableRandom(23);
        for (var p : adapter.params()) {
            Tensor t = p.value();
            float[] v = new float[Math.toIntExact(t.numel())];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (0.05 * (2 * r.nextDouble() - 1));
            }
            t.copyFrom(Tensor.of(v, t.shape()));
        }
    }
}
