package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

/** Stacked quantized experts and per-expert LoRA B factors on the device, for the decode pairs' tests. */
abstract class DecodePairsTestBase extends CudaTestBase {
    /** Stacked experts of a format on the device, each a slice, and their dequantized reference [E·N, K]. */
    record Experts(ExpertWeights w, float[] ref, QuantizedTensor stack) {
    }

    Experts experts(String format, SplittableRandom r, int experts, int n, int k) {
        QuantizedTensor h = CudaQuantTest.random(format, r, experts * n, k);
        QuantizedTensor d = gpu.toDevice(h);
        QuantizedTensor[] q = new QuantizedTensor[experts];
        for (int e = 0; e < experts; e++) {
            q[e] = CudaMoeOps.expert(d, e, n);
        }
        return new Experts(new ExpertWeights(n, k, new Tensor[experts], q), CudaQuantTest.dequantizeRef(h), d);
    }

    /** Per expert an f32 B [n, rank] on the device, its host copy in bs. */
    ExpertWeights loraB(SplittableRandom r, int experts, int n, int rank, float[][] bs) {
        Tensor[] d = new Tensor[experts];
        for (int e = 0; e < experts; e++) {
            bs[e] = randn(r, 0.5f, n, rank).toFloatArray();
            d[e] = dev(Tensor.of(bs[e], n, rank));
        }
        return new ExpertWeights(n, rank, d, new QuantizedTensor[experts]);
    }
}
