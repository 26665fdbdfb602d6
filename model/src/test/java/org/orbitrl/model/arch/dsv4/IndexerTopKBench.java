package org.orbitrl.model.arch.dsv4;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * The host's share of a DeepSeek V4 decode step that grows with the context: each sequence's lightning-indexer top-k
 * ({@link DeepseekV4TopK}, V4-Flash's 512 of context/4 entries, a quarter of them exact zeros as the indexer's ReLU
 * makes) on every compressed-sparse layer (21 in V4-Flash), the sequences of the step one after another (the form
 * before) against all of them at once over the common pool's threads (the decode step's form), in the same run; the
 * choices must be equal. Median of 5 runs of one step's layers.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.IndexerTopKBench [contexts, e.g. 8192,32768] [batch] [layers]</pre>
 */
public final class IndexerTopKBench {
    private static final int TOP_K = 512;

    private IndexerTopKBench() {
    }

    public static void main(String[] args) {
        int[] contexts = Arrays.stream((args.length > 0 ? args[0] : "8192,32768").split(",")).mapToInt(Integer::parseInt).toArray();
        int batch = args.length > 1 ? Integer.parseInt(args[1]) : 32;
        int layers = args.length > 2 ? Integer.parseInt(args[2]) : 21;
        System.out.printf("indexer top-%d a sequence, batch %d, %d compressed-sparse layers; %d threads in the common pool%n",
                TOP_K, batch, layers, java.util.concurrent.ForkJoinPool.getCommonPoolParallelism() + 1);
        System.out.println("| context | entries | one after another | all at once | ratio |");
        System.out.println("|---|---|---|---|---|");
        for (int context : contexts) {
            int m = context / 4;
            SplittableRandom r = new SplittableRandom(context);
            float[][] scores = new float[batch][m];
            for (float[] s : scores) {
                for (int e = 0; e < m; e++) {
                    s[e] = r.nextInt(4) == 0 ? 0f : (float) r.nextDouble(0, 3);
                }
            }
            int[][] serial = new int[batch][];
            int[][] parallel = new int[batch][];
            double[] one = new double[5];
            double[] all = new double[5];
            for (int run = 0; run < 6; run++) {
                long t0 = System.nanoTime();
                for (int l = 0; l < layers; l++) {
                    for (int b = 0; b < batch; b++) {
                        serial[b] = DeepseekV4TopK.select(scores[b], Math.min(TOP_K, m));
                    }
                }
                long t1 = System.nanoTime();
                for (int l = 0; l < layers; l++) {
                    Ops.forRows(batch, (long) m * 8, b -> parallel[b] = DeepseekV4TopK.select(scores[b], Math.min(TOP_K, m)));
                }
                long t2 = System.nanoTime();
                if (run > 0) {
                    one[run - 1] = (t1 - t0) / 1e6;
                    all[run - 1] = (t2 - t1) / 1e6;
                }
            }
            for (int b = 0; b < batch; b++) {
                if (!Arrays.equals(serial[b], parallel[b])) {
                    throw new IllegalStateException("sequence " + b + " chose differently on the pool");
                }
            }
            Arrays.sort(one);
            Arrays.sort(all);
            System.out.printf("| %d | %d | %.2f ms | %.2f ms | %.2fx |%n", context, m, one[2], all[2], one[2] / all[2]);
        }
    }
}
