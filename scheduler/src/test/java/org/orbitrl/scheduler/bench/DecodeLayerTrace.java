package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Where a one-launch decode layer's time goes ({@link CudaBackend#decodeLayer}, {@code decode_layer.cu}): a random
 * Qwen3-MoE of a real shape cut to a few layers (Qwen3-30B-A3B by default), a sequence prefilled with {@code context}
 * tokens, eager decode steps with the launch's phase stamps recorded; printed for the last layer of the last step, µs
 * after the first block's start, min / median / max over the blocks.
 *
 * <p>Usage: {@code DecodeLayerTrace CONFIG_JSON [LAYERS [CONTEXT]]}.
 */
public final class DecodeLayerTrace {
    private static final String[] MARKS = {"start", "h staged", "q/k/v done", "barrier 1", "attention done", "barrier 2",
            "combined", "barrier 3", "o done", "barrier 4", "router done", "barrier 5", "top-k, copies issued", "gate/up done",
            "barrier 6", "end"};

    private DecodeLayerTrace() {
    }

    public static void main(String[] args) throws Exception {
        if (!Cuda.available()) {
            System.out.println("DecodeLayerTrace: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        System.setProperty("orbit.cuda.decodeLayer", "on"); // the launch this bench looks into is off by default
        int layers = args.length > 1 ? Integer.parseInt(args[1]) : 4;
        int context = args.length > 2 ? Integer.parseInt(args[2]) : 512;
        ObjectMapper json = new ObjectMapper();
        ObjectNode node = (ObjectNode) json.readTree(Path.of(args[0]).toFile());
        node.put("num_hidden_layers", layers);
        Path f = Files.createTempFile("decode-layer-trace", ".json");
        f.toFile().deleteOnExit();
        json.writeValue(f.toFile(), node);
        DecoderConfig c = DecoderConfig.from(ConfigLoader.load(f));
        try (CudaBackend gpu = new CudaBackend()) {
            Qwen3Model model = Qwen3Model.load(c, new RandomQwen3Moe(c, 1), gpu, Qwen3Model.LoadOptions.full());
            CausalLM.CacheGeometry g = model.cacheGeometry();
            BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 16, context / 16 + 8, true,
                    DType.BF16);
            SplittableRandom r = new SplittableRandom(3);
            int[] prompt = new int[context];
            for (int i = 0; i < context; i++) {
                prompt[i] = r.nextInt(c.vocab());
            }
            try (PagedSequence s = new PagedSequence(pool)) {
                gpu.allocator().release(model.forward(List.of(new CausalLM.Segment(prompt, s))));
                Tensor trace = gpu.toDevice(Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I64, 2048, 16));
                gpu.traceDecodeLayer(trace);
                for (int i = 0; i < 4; i++) {
                    gpu.allocator().release(model.forward(List.of(new CausalLM.Segment(new int[]{r.nextInt(c.vocab())}, s))));
                }
                gpu.traceDecodeLayer(null);
                long[] t = gpu.toHost(trace).toLongArray();
                gpu.free(trace);
                int grid = 0;
                while (grid < 2048 && t[grid * 16] != 0) {
                    grid++;
                }
                if (grid == 0) {
                    System.out.println("DecodeLayerTrace: no layer took the one launch (" + gpu.decodeLayerLaunches() + " launches)");
                    return;
                }
                long t0 = Long.MAX_VALUE;
                for (int b = 0; b < grid; b++) {
                    t0 = Math.min(t0, t[b * 16]);
                }
                System.out.printf("decode_layer phases, the last layer of the last step (%s, %d layers, context %d), %d blocks"
                        + " (µs after the first block's start: min / median / max over blocks)%n", args[0], layers, context, grid);
                for (int k = 0; k < MARKS.length; k++) {
                    double[] v = new double[grid];
                    for (int b = 0; b < grid; b++) {
                        v[b] = (t[b * 16 + k] - t0) / 1e3;
                    }
                    Arrays.sort(v);
                    System.out.printf("  %-22s %7.2f %7.2f %7.2f%n", MARKS[k], v[0], v[grid / 2], v[grid - 1]);
                }
            }
        }
    }
}
