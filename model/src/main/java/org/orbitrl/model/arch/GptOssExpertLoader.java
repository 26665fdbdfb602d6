package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;

import java.util.function.Function;

/**
 * Reads one layer's gpt-oss experts as the checkpoint stores them, per expert as [out, in] linears:
 * <ul>
 *   <li>MXFP4 (the shipped checkpoints): {@code gate_up_proj_blocks} u8 [E, 2I, hidden/32, 16],
 *       {@code gate_up_proj_scales} u8 [E, 2I, hidden/32], {@code down_proj_blocks} u8 [E, hidden, I/32, 16],
 *       {@code down_proj_scales} u8 [E, hidden, I/32]: each expert's slice is already an [out, in]
 *       MXFP4 matrix in the kernels' layout and is used as is (zero-copy, no re-quantization);</li>
 *   <li>bf16/f32: {@code gate_up_proj} [E, hidden, 2I] and {@code down_proj} [E, I, hidden], stored
 *       input-major ({@code x @ W}); each expert's slice is transposed once into an [out, in] copy,
 *       or quantized when the load options ask for it.</li>
 * </ul>
 * Biases {@code gate_up_proj_bias} [E, 2I] and {@code down_proj_bias} [E, hidden] come with both, as f32 stacks (what
 * the kernels add); each expert's linear holds its row of them. The gate_up rows stay interleaved (row 2j gate, row
 * 2j+1 up), as the checkpoint has them.
 */
final class GptOssExpertLoader {
    private GptOssExpertLoader() {
    }

    /**
     * One layer's experts: gate_up and down linears per expert, whose biases are rows of {@code gateUpBias} f32 [E, 2I]
     * and {@code downBias} f32 [E, hidden].
     */
    record Experts(Linear[] gateUp, Linear[] down, Tensor gateUpBias, Tensor downBias) {
        /** The same experts with their weights and bias stacks in {@code place}'s memory (quantized experts stacked). */
        Experts placed(org.orbitrl.kernels.TensorAllocator place) {
            Tensor gb = org.orbitrl.model.nn.Placement.tensor(place, gateUpBias);
            Tensor db = org.orbitrl.model.nn.Placement.tensor(place, downBias);
            Weight[] gw = org.orbitrl.model.nn.Placement.experts(place, weights(gateUp));
            Weight[] dw = org.orbitrl.model.nn.Placement.experts(place, weights(down));
            Linear[] gu = new Linear[gateUp.length];
            Linear[] dn = new Linear[down.length];
            for (int x = 0; x < gu.length; x++) {
                gu[x] = new Linear(gateUp[x].name(), gw[x], gb.select(0, x));
                dn[x] = new Linear(down[x].name(), dw[x], db.select(0, x));
            }
            return new Experts(gu, dn, gb, db);
        }

        private static Weight[] weights(Linear[] ls) {
            Weight[] w = new Weight[ls.length];
            for (int x = 0; x < w.length; x++) {
                w[x] = ls[x].weight();
            }
            return w;
        }
    }

    /** Expert linears of one layer, in host memory (zero-copy views of MXFP4 checkpoints). */
    static Experts load(WeightLoader w, GptOssConfig c, String module, Function<Tensor, Weight> quantizer) {
        int e = c.experts();
        int h = c.hidden();
        int inter = c.intermediate();
        boolean blocks = w.has(module + ".gate_up_proj_blocks") || w.has(module + ".down_proj_blocks");
        boolean expectBlocks = c.storesMxfp4(module);
        if (blocks != expectBlocks) {
            throw new IllegalArgumentException(module + ": the checkpoint stores "
                    + (blocks ? "MXFP4 *_blocks/*_scales" : "full-precision gate_up_proj/down_proj")
                    + " experts, but config.json " + (expectBlocks
                    ? "has an mxfp4 quantization_config that does not exclude them (modules_to_not_convert "
                    + c.modulesToNotConvert() + ")"
                    : "has no mxfp4 quantization_config for them"));
        }
        Tensor guBias = f32(w.tensor(module + ".gate_up_proj_bias", e, 2L * inter));  // [E, 2I]
        Tensor downBias = f32(w.tensor(module + ".down_proj_bias", e, h));           // [E, hidden]
        Linear[] gateUp = new Linear[e];
        Linear[] down = new Linear[e];
        if (blocks) {
            requireBlocks(module, "hidden_size", h);
            requireBlocks(module, "intermediate_size", inter);
            Tensor guBlocks = u8(w.tensor(module + ".gate_up_proj_blocks", e, 2L * inter, h / 32, 16),
                    module + ".gate_up_proj_blocks");                                   // [E, 2I, hidden/32, 16]
            Tensor guScales = u8(w.tensor(module + ".gate_up_proj_scales", e, 2L * inter, h / 32),
                    module + ".gate_up_proj_scales");                                   // [E, 2I, hidden/32]
            Tensor dBlocks = u8(w.tensor(module + ".down_proj_blocks", e, h, inter / 32, 16),
                    module + ".down_proj_blocks");                                      // [E, hidden, I/32, 16]
            Tensor dScales = u8(w.tensor(module + ".down_proj_scales", e, h, inter / 32),
                    module + ".down_proj_scales");                                      // [E, hidden, I/32]
            for (int x = 0; x < e; x++) {
                gateUp[x] = new Linear(module + "." + x + ".gate_up_proj",
                        Weight.of(mxfp4(module + ".gate_up_proj", guBlocks.select(0, x), guScales.select(0, x))),
                        guBias.select(0, x));
                down[x] = new Linear(module + "." + x + ".down_proj",
                        Weight.of(mxfp4(module + ".down_proj", dBlocks.select(0, x), dScales.select(0, x))),
                        downBias.select(0, x));
            }
        } else {
            Tensor gu = w.tensor(module + ".gate_up_proj", e, h, 2L * inter); // [E, hidden, 2I]
            Tensor dn = w.tensor(module + ".down_proj", e, inter, h);        // [E, I, hidden]
            for (int x = 0; x < e; x++) {
                gateUp[x] = new Linear(module + "." + x + ".gate_up_proj",
                        dense(gu.select(0, x).transpose(0, 1), quantizer), guBias.select(0, x)); // [2I, hidden]
                down[x] = new Linear(module + "." + x + ".down_proj",
                        dense(dn.select(0, x).transpose(0, 1), quantizer), downBias.select(0, x)); // [hidden, I]
            }
        }
        return new Experts(gateUp, down, guBias, downBias);
    }

    private static Tensor f32(Tensor t) {
        return t.dtype() == DType.F32 ? t : t.to(DType.F32);
    }

    private static void requireBlocks(String module, String what, int n) {
        if (n % 32 != 0) {
            throw new IllegalArgumentException(module + ": MXFP4 experts need " + what + " a multiple of 32, got " + n);
        }
    }

    private static Tensor u8(Tensor t, String name) {
        if (t.dtype() != DType.U8) {
            throw new IllegalArgumentException(name + ": expected dtype U8 (MXFP4 codes or E8M0 scales), got " + t.dtype());
        }
        return t;
    }

    private static QuantizedTensor mxfp4(String name, Tensor blocks, Tensor scales) {
        try {
            return Mxfp4.fromBlocks(blocks, scales);
        } catch (IllegalArgumentException ex) {
            throw new IllegalArgumentException(name + ": " + ex.getMessage(), ex);
        }
    }

    /** An [out, in] contiguous copy of a transposed slice (its dtype kept), or quantized. */
    private static Weight dense(Tensor transposed, Function<Tensor, Weight> quantizer) {
        Tensor w = transposed.contiguous();
        return quantizer == null ? Weight.of(w) : quantizer.apply(w);
    }
}
