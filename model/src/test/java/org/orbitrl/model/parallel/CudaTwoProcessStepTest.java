package org.orbitrl.model.parallel;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.comm.Rendezvous;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Two processes on one host, one GPU each (what the daemons of a two-node job are to each other): rank 0 makes the
 * NCCL unique id and serves it over the TCP {@link Rendezvous}, rank 1 joins, both start their rank with
 * {@code ncclCommInitRank}, and they run the qwen3_moe fixture's training step with expert parallelism over the two
 * (each process sees only its own GPU through {@code CUDA_VISIBLE_DEVICES}), in exact mode. The loss, the logits and
 * the adapter gradients of both ranks are this process's step on one GPU (exact mode) bit for bit. Skipped, with the reason, on machines with fewer than two GPUs.
 */
class CudaTwoProcessStepTest {
    private static final String JOB = "two-process-step";
    private static final int WORLD = 2;

    @Test
    void expertParallelStepAcrossTwoProcesses() throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        assumeTrue(Cuda.deviceCount() >= WORLD, () -> "needs " + WORLD + " GPUs; this machine has " + Cuda.deviceCount());
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture("qwen3_moe");
        ParallelTrainingStepTest.StepResult one;
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            one = f.step(gpu, null, false, 0, f.seqs.size(), null, 0);
        }
        int port;
        try (ServerSocket probe = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        Path dir = Files.createTempDirectory("orbit-two-process");
        List<Process> procs = new ArrayList<>();
        String java = ProcessHandle.current().info().command().orElseThrow();
        for (int r = 0; r < WORLD; r++) {
            List<String> cmd = new ArrayList<>();
            cmd.add(java);
            cmd.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
            cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Child.class.getName(), String.valueOf(r),
                    String.valueOf(port), dir.resolve("rank" + r + ".bin").toString()));
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(dir.resolve("rank" + r + ".log").toFile());
            pb.environment().put("CUDA_VISIBLE_DEVICES", String.valueOf(r));
            procs.add(pb.start());
        }
        for (int r = 0; r < WORLD; r++) {
            Process p = procs.get(r);
            if (!p.waitFor(240, TimeUnit.SECONDS)) {
                procs.forEach(Process::destroyForcibly);
                fail("rank " + r + " did not finish in 240 s; its log:\n" + Files.readString(dir.resolve("rank" + r + ".log")));
            }
            assertEquals(0, p.exitValue(), "rank " + r + " exit code; its log:\n" + Files.readString(dir.resolve("rank" + r + ".log")));
        }
        for (int r = 0; r < WORLD; r++) {
            Result got = Result.read(dir.resolve("rank" + r + ".bin"));
            assertEquals(one.loss(), got.loss, 0, "rank " + r + " loss");
            ParallelTrainingStepTest.assertClose("rank " + r + " logits", one.logits(), got.logits, true);
            assertEquals(one.grads().keySet(), got.grads.keySet(), "rank " + r + " adapter parameters");
            double worst = 0;
            for (var e : one.grads().entrySet()) {
                worst = Math.max(worst, ParallelTrainingStepTest.assertClose("rank " + r + " gradient " + e.getKey(),
                        e.getValue().toFloatArray(), got.grads.get(e.getKey()), true));
            }
            assertTrue(got.grads.size() >= 8, "adapter gradients compared: " + got.grads.size());
            System.out.printf("two processes, rank %d: loss %.9g (one GPU %.9g); %d gradients, worst |err|/max|ref| %.3g%n", r,
                    got.loss, one.loss(), got.grads.size(), worst);
        }
    }

    /** One rank's loss, logits and whole adapter gradients, as a child process writes them. */
    record Result(double loss, float[] logits, Map<String, float[]> grads) {
        void write(Path file) throws IOException {
            try (DataOutputStream out = new DataOutputStream(Files.newOutputStream(file))) {
                out.writeDouble(loss);
                writeFloats(out, logits);
                out.writeInt(grads.size());
                for (var e : grads.entrySet()) {
                    out.writeUTF(e.getKey());
                    writeFloats(out, e.getValue());
                }
            }
        }

        static Result read(Path file) throws IOException {
            try (DataInputStream in = new DataInputStream(Files.newInputStream(file))) {
                double loss = in.readDouble();
                float[] logits = readFloats(in);
                int n = in.readInt();
                Map<String, float[]> grads = new LinkedHashMap<>();
                for (int i = 0; i < n; i++) {
                    grads.put(in.readUTF(), readFloats(in));
                }
                return new Result(loss, logits, grads);
            }
        }

        private static void writeFloats(DataOutputStream out, float[] v) throws IOException {
            out.writeInt(v.length);
            for (float x : v) {
                out.writeFloat(x);
            }
        }

        private static float[] readFloats(DataInputStream in) throws IOException {
            float[] v = new float[in.readInt()];
            for (int i = 0; i < v.length; i++) {
                v[i] = in.readFloat();
            }
            return v;
        }
    }

    /** A rank's process: {@code Child RANK PORT OUT_FILE}; its only GPU is device 0. */
    public static final class Child {
        public static void main(String[] args) throws Exception {
            int rank = Integer.parseInt(args[0]);
            int port = Integer.parseInt(args[1]);
            Path out = Path.of(args[2]);
            Duration timeout = Duration.ofSeconds(120);
            byte[] id;
            Thread server = null;
            if (rank == 0) {
                byte[] made = NcclCommunicator.newUniqueId();
                ServerSocket ss = new ServerSocket(port, 50, InetAddress.getLoopbackAddress());
                server = Thread.ofPlatform().start(() -> {
                    try (ss) {
                        Rendezvous.serve(ss, JOB, WORLD, made, timeout);
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                });
                id = made;
            } else {
                id = Rendezvous.join(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), JOB, rank, WORLD, timeout);
            }
            ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture("qwen3_moe");
            try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
                 NcclCommunicator world = NcclCommunicator.initRank(gpu, id, rank, WORLD)) {
                ParallelLayout layout = new ParallelLayout(WORLD, 1, WORLD);
                var r = f.step(gpu, RankGroups.split(layout, world), false, 0, f.seqs.size(), null, 0);
                Map<String, float[]> grads = new LinkedHashMap<>();
                for (Map.Entry<String, Tensor> e : r.grads().entrySet()) {
                    grads.put(e.getKey(), e.getValue().toFloatArray());
                }
                new Result(r.loss(), r.logits(), grads).write(out);
                System.out.printf("rank %d of %d on %s: loss %.9g%n", rank, WORLD, gpu.name(), r.loss());
            }
            if (server != null) {
                server.join();
            }
        }
    }
}
