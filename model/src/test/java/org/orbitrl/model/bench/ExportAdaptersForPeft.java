package org.orbitrl.model.bench;

import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.checkpoint.SafetensorsWriter;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Writes adapters saved by Orbit (fresh LoRA with seeded non-zero B, on attention and on fused
 * experts through target_parameters) for the fixture models, with Orbit's logits on the fixture
 * input ids, so that {@code peft_check/check_saved_adapters.py} can load them with peft and
 * compare. {@code tools/bench -pl model org.orbitrl.model.bench.ExportAdaptersForPeft FIXTURES OUT}
 */
public final class ExportAdaptersForPeft {
    public static void main(String[] args) throws Exception {
        Path hf = Path.of(args[0]);
        Path out = Path.of(args[1]);
        for (String arch : List.of("qwen3", "qwen3_moe")) {
            try (LoadedModel lm = LoadedModel.load(hf.resolve(arch), Backends.cpu(), BaseFormat.BF16)) {
                AdapterConfig cfg = arch.equals("qwen3_moe")
                        ? AdapterConfig.lora(4, 8, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                        List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))
                        : AdapterConfig.lora(4, 8, List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                        List.of());
                LoraAdapter a = LoraAdapter.create(cfg, lm.targets(), lm.model().backend().allocator(), 11);
                SplittableRandom rnd = new SplittableRandom(12);
                for (Adapter.Param p : a.params()) {
                    if (p.name().endsWith("lora_B.weight")) {
                        float[] v = new float[Math.toIntExact(p.value().numel())];
                        for (int i = 0; i < v.length; i++) {
                            v[i] = (float) ((rnd.nextDouble() * 2 - 1) * 0.3);
                        }
                        p.value().copyFrom(Tensor.of(v, p.value().shape()));
                    }
                }
                a.save(out.resolve(arch).resolve("adapter"));
                Tensor ids;
                try (Checkpoint ref = Checkpoint.open(hf.resolve(arch).resolve("reference.safetensors"))) {
                    ids = ref.tensor("input_ids").to(org.orbitrl.kernels.DType.I64);
                }
                List<CausalLM.Segment> batch = new ArrayList<>();
                for (int b = 0; b < ids.size(0); b++) {
                    int[] s = new int[ids.size(1)];
                    for (int t = 0; t < s.length; t++) {
                        s[t] = (int) ids.getLong(b, t);
                    }
                    batch.add(new CausalLM.Segment(s, null));
                }
                Tensor logits = lm.model().forward(batch);
                new SafetensorsWriter().add("input_ids", ids).add("logits", logits.reshape(ids.size(0), ids.size(1), -1))
                        .write(out.resolve(arch).resolve("ours.safetensors"));
                System.out.println("wrote " + out.resolve(arch));
            }
        }
    }
}
