package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraFixtureTest;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A training step hands the attention's statistics from the forward to the backward where the backend keeps them
 * ({@code Backend.attentionWithStats}): a backend over the CPU one that claims to keep them marks each lse it is given,
 * and its backward checks that it receives, for every segment of every layer, the lse of that segment's forward and the
 * output that forward wrote, still unreleased (the test JVM poisons released tensors with NaN), with recompute on and
 * off. The gradients equal a plain CPU run's bit for bit (the CPU kernels ignore the statistics).
 */
class AttentionStatsTest {
    private static final float MARK = 7.25f;

    /** Counts of the calls, and the sums of the outputs the forwards wrote (each must come back to a backward). */
    private static final class Recorder {
        int forwards;
        int backwards;
        final List<Double> outputs = new ArrayList<>();
    }

    private static double sum(Tensor t) {
        double s = 0;
        for (float x : t.contiguous().toFloatArray()) {
            s += x;
        }
        return s;
    }

    private static Backend keeping(CpuBackend cpu, Recorder rec) {
        return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class},
                (proxy, method, args) -> {
                    switch (method.getName()) {
                        case "keepsAttentionStats" -> {
                            return true;
                        }
                        case "attentionWithStats" -> {
                            Tensor out = (Tensor) args[3];
                            cpu.attention((Tensor) args[0], (Tensor) args[1], (Tensor) args[2], out, (int) args[4],
                                    (AttentionSpec) args[5]);
                            ((Tensor) args[6]).fill(MARK);
                            rec.forwards++;
                            rec.outputs.add(sum(out));
                            return true;
                        }
                        case "attentionBackward" -> {
                            if (args.length == 11) {   // the form with the forward's output and statistics
                                Tensor out = (Tensor) args[3];
                                for (float x : ((Tensor) args[4]).contiguous().toFloatArray()) {
                                    assertEquals(MARK, x, "the forward's statistics reach the backward unreleased");
                                }
                                double s = sum(out);
                                assertTrue(rec.outputs.remove(s), "the backward gets an output a forward wrote: " + s);
                                rec.backwards++;
                                cpu.attentionBackward((Tensor) args[0], (Tensor) args[1], (Tensor) args[2], (Tensor) args[5],
                                        (int) args[6], (AttentionSpec) args[7], (Tensor) args[8], (Tensor) args[9],
                                        (Tensor) args[10]);
                                return null;
                            }
                        }
                        default -> {
                        }
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    private static Map<String, float[]> gradients(String arch, boolean recompute, Recorder rec) {
        Path dir = TestSafetensors.fixtures().resolve(arch);
        var fixture = LoraFixtureTest.setup(arch);
        try (CpuBackend cpu = new CpuBackend(2, TensorAllocator.heap())) {
            Backend b = rec == null ? cpu : keeping(cpu, rec);
            Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")),
                    b, Qwen3Model.LoadOptions.full());
            var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                    new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), m, TensorAllocator.heap());
            return LoraFixtureTest.gradients(new LoraFixtureTest.Setup(m, adapter, fixture.ref(), fixture.seqs()), recompute);
        }
    }

    @Test
    void theForwardsStatisticsAndOutputReachEachSegmentsBackward() {
        assertTrue(TensorAllocator.poisonReleased(), "released host tensors must be poisoned in the test JVM");
        for (String arch : List.of("qwen3", "qwen3_moe")) {
            for (boolean recompute : new boolean[]{false, true}) {
                String what = arch + (recompute ? " recompute" : "");
                Map<String, float[]> want = gradients(arch, recompute, null);
                Recorder rec = new Recorder();
                Map<String, float[]> got = gradients(arch, recompute, rec);
                int layers = Qwen3FixtureTest.config(arch).layers();
                int segments = LoraFixtureTest.setup(arch).seqs().size();
                assertEquals(layers * segments, rec.backwards, what + ": a backward from the statistics per layer and segment");
                assertTrue(rec.outputs.isEmpty(), what + ": outputs of forwards that no backward read: " + rec.outputs);
                assertEquals(want.keySet(), got.keySet(), what + " gradient names");
                for (var e : want.entrySet()) {
                    assertArrayEquals(e.getValue(), got.get(e.getKey()), what + " " + e.getKey());
                }
                System.out.printf("%s: %d forwards kept statistics, %d backwards read them, %d gradients bit for bit%n",
                        what, rec.forwards, rec.backwards, want.size());
            }
        }
    }
}
