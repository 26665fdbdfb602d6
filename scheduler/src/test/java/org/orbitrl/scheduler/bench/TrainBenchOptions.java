package org.orbitrl.scheduler.bench;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Command-line options of {@link Qwen3TrainBench}.
 *
 * @param config      the model's config.json
 * @param layers      decoder layers to build, 0 for the config's own count
 * @param small       shrink the widths to a CPU-sized smoke check
 * @param shapes      tokens per step as {sequences, tokens per sequence}, tried in order
 * @param steps       timed steps per shape, after one warm-up step
 * @param recompute   recompute each layer's activations in backward
 * @param expertChunk routed experts dequantized at once
 * @param keptLayers  with recompute, the last layers that keep their activations; -1: as many as the
 *                    planner fits on the GPU ({@code --kept-layers auto})
 * @param budgetSeconds no new shape starts after this many seconds
 * @param peer        the peer's JSON, or null
 * @param out         where the markdown goes, or null
 * @param render      an earlier run's JSON to render again instead of running, or null
 */
record TrainBenchOptions(Path config, int layers, boolean small, List<int[]> shapes, int steps, boolean recompute,
                         int expertChunk, int keptLayers, int budgetSeconds, Path peer, Path out, Path render) {

    static TrainBenchOptions parse(String[] args) {
        Path config = null;
        int layers = 0;
        boolean small = false;
        String shapes = "1x512,2x1024,4x2048,8x2048";
        int steps = 2;
        boolean recompute = true;
        int chunk = 8;
        int kept = 0;
        int budget = 200;
        Path peer = null;
        Path out = null;
        Path render = null;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--small")) {
                small = true;
                continue;
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("option " + a + " needs a value");
            }
            String v = args[++i];
            switch (a) {
                case "--config" -> config = Path.of(v);
                case "--layers" -> layers = Integer.parseInt(v);
                case "--shapes" -> shapes = v;
                case "--steps" -> steps = Integer.parseInt(v);
                case "--recompute" -> recompute = Boolean.parseBoolean(v);
                case "--expert-chunk" -> chunk = Integer.parseInt(v);
                case "--kept-layers" -> kept = v.equals("auto") ? -1 : Integer.parseInt(v);
                case "--budget-s" -> budget = Integer.parseInt(v);
                case "--peer" -> peer = Path.of(v);
                case "--out" -> out = Path.of(v);
                case "--render" -> render = Path.of(v);
                default -> throw new IllegalArgumentException("unknown option " + a + "; expected --config, --layers, --small, "
                        + "--shapes, --steps, --recompute, --expert-chunk, --kept-layers, --budget-s, --peer, --out, --render");
            }
        }
        if (config == null && render == null) {
            throw new IllegalArgumentException("--config PATH (a Qwen3-MoE config.json) is required");
        }
        if (steps < 1 || layers < 0 || chunk < 1 || kept < -1) {
            throw new IllegalArgumentException("--steps and --expert-chunk must be positive, --layers and --kept-layers not negative");
        }
        List<int[]> list = new ArrayList<>();
        for (String s : shapes.split(",")) {
            String[] f = s.trim().split("x");
            if (f.length != 2) {
                throw new IllegalArgumentException("--shapes: '" + s + "' is not SEQUENCESxTOKENS (1x512, say)");
            }
            list.add(new int[]{Integer.parseInt(f[0]), Integer.parseInt(f[1])});
        }
        if (peer != null && !peer.toFile().isFile()) {
            peer = null;   // the peer did not run or wrote nothing: the table has no peer columns
        }
        return new TrainBenchOptions(config, layers, small, list, steps, recompute, chunk, kept, budget, peer, out, render);
    }
}
