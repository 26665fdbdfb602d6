package org.orbitrl.scheduler.log.bench;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.orbitrl.scheduler.log.FinishReason;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleCodec;
import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleLogWriter;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;

/**
 * Sample-log throughput against a peer measured in the same run: appending groups (encode + one
 * Chronicle document each) and reading them back (decode), versus writing the same encoded bytes
 * sequentially to a plain file with a FileChannel (the page-cache write rate of this machine).
 *
 * <pre>
 * java ... org.orbitrl.scheduler.log.bench.SampleLogBench [DIR] [GROUPS] [G] [RESPONSE_TOKENS]
 * </pre>
 */
public final class SampleLogBench {
    private SampleLogBench() {
    }

    static SampleGroup group(SplittableRandom rnd, long id, int g, int tokens) {
        List<SampleRecord> samples = new ArrayList<>();
        int[] prompt = rnd.ints(128, 0, 150_000).toArray();
        for (int i = 0; i < g; i++) {
            float[] lp = new float[tokens];
            boolean[] mask = new boolean[tokens];
            for (int t = 0; t < tokens; t++) {
                lp[t] = (float) -rnd.nextDouble(8);
                mask[t] = true;
            }
            samples.add(SampleRecord.builder().job("bench").promptId("p" + id).group(id, i, g).promptTokens(prompt)
                    .response(rnd.ints(tokens, 0, 150_000).toArray(), lp, mask).version(id / 8)
                    .reward(1.0, Map.of("correct", 1.0)).finishReason(FinishReason.STOP)
                    .timings(new SampleTimings(0, 1, 0)).build());
        }
        return new SampleGroup(samples);
    }

    public static void main(String[] args) throws IOException {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("samplelog-bench");
        int groups = args.length > 1 ? Integer.parseInt(args[1]) : 4000;
        int g = args.length > 2 ? Integer.parseInt(args[2]) : 8;
        int tokens = args.length > 3 ? Integer.parseInt(args[3]) : 512;
        SplittableRandom rnd = new SplittableRandom(1);
        List<SampleGroup> data = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            data.add(group(rnd, i, g, tokens));
        }
        long bytesPerGroup = SampleCodec.encode(data.getFirst()).length;
        for (int round = 0; round < 3; round++) {
            Path q = dir.resolve("queue-" + round);
            long t0 = System.nanoTime();
            try (SampleLog log = SampleLog.open(q); SampleLogWriter w = log.writer()) {
                for (int i = 0; i < groups; i++) {
                    w.append(data.get(i % data.size()));
                }
            }
            long t1 = System.nanoTime();
            long read = 0;
            try (SampleLog log = SampleLog.open(q); SampleLogReader r = log.reader()) {
                for (LogEntry e = r.next(); e != null; e = r.next()) {
                    read += ((LogEntry.Group) e).group().size();
                }
            }
            long t2 = System.nanoTime();
            Path plain = dir.resolve("plain-" + round);
            byte[][] encoded = data.stream().map(SampleCodec::encode).toArray(byte[][]::new);
            long t3 = System.nanoTime();
            try (FileChannel ch = FileChannel.open(plain, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
                for (int i = 0; i < groups; i++) {
                    ByteBuffer b = ByteBuffer.wrap(encoded[i % encoded.length]);
                    while (b.hasRemaining()) {
                        ch.write(b);
                    }
                }
            }
            long t4 = System.nanoTime();
            long decoded = 0;
            for (int i = 0; i < groups; i++) {
                decoded += ((LogEntry.Group) SampleCodec.decode(i, encoded[i % encoded.length])).group().size();
            }
            long t5 = System.nanoTime();
            double mb = groups * bytesPerGroup / 1e6;
            double append = mb / ((t1 - t0) / 1e9);
            double readRate = mb / ((t2 - t1) / 1e9);
            double peer = mb / ((t4 - t3) / 1e9);
            double decode = mb / ((t5 - t4) / 1e9);
            System.out.printf("round %d: %d groups x %d samples x %d tokens (%.1f MB): append %.0f MB/s (%.0f groups/s),"
                            + " read %.0f MB/s (%d samples; decoding alone %.0f MB/s, %d samples), plain FileChannel"
                            + " write %.0f MB/s; append/peer %.2f%n", round, groups, g, tokens, mb, append,
                    groups / ((t1 - t0) / 1e9), readRate, read, decode, decoded, peer, append / peer);
        }
    }
}
