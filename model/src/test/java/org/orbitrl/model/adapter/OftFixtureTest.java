package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.checkpoint.Checkpoint;

import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * PEFT OFT fixtures ({@code fixtures/oft}, made by {@code make_oft_fixture.py} with peft 0.21.0 over
 * transformers 5.17): for qwen3 and qwen3_moe and three configurations (exact Cayley; PEFT's
 * default Cayley-Neumann with 5 terms; r given with a shared block, coft and 7 terms), the logits
 * with the fixture adapter match {@code reference_oft} within 1e-4 absolute, the gradients of the
 * fixture's policy-gradient loss match every {@code grad.*} within 1e-3 relative
 * (‖ours − ref‖ / ‖ref‖), and the rotation blocks and coft-projected parameters match PEFT's.
 */
class OftFixtureTest {
    static final List<String> VARIANTS = List.of("cayley", "neumann", "share_coft");

    record Setup(Qwen3Model model, OftAdapter adapter, TestSafetensors ref, TestSafetensors base, List<int[]> seqs) {
    }

    /** The OFT fixtures: {@code -Dorbit.oft.fixtures} where set (a bundle without test resources on disk), else the test resources. */
    static Path root() {
        String dir = System.getProperty("orbit.oft.fixtures");
        if (dir != null) {
            return Path.of(dir);
        }
        try {
            return Path.of(OftFixtureTest.class.getResource("/fixtures/oft").toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static Stream<Arguments> cases() {
        return Stream.of("qwen3", "qwen3_moe").flatMap(a -> VARIANTS.stream().map(v -> Arguments.of(a, v)));
    }

    static Qwen3Model model(String arch) {
        Path dir = TestSafetensors.fixtures().resolve(arch);
        return Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")),
                Backends.cpu(), Qwen3Model.LoadOptions.full());
    }

    static Setup setup(String arch, String variant) {
        Path dir = root().resolve(arch).resolve(variant);
        Qwen3Model model = model(arch);
        AdapterConfig cfg = AdapterConfig.read(dir.resolve("adapter"));
        OftAdapter adapter = OftAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")),
                model, TensorAllocator.heap());
        TestSafetensors base = new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
        return new Setup(model, adapter, new TestSafetensors(dir.resolve("reference_oft.safetensors")), base,
                FixtureLoss.sequences(base));
    }

    @ParameterizedTest
    @MethodSource("cases")
    void logitsMatchPeft(String arch, String variant) {
        Setup s = setup(arch, variant);
        Tensor logits = s.model().forwardTrain(s.seqs(), false).logits();
        Qwen3FixtureTest.assertClose(arch + "/" + variant + " OFT logits", s.ref().get("logits").toFloatArray(),
                logits.toFloatArray(), 1e-4f);
    }

    @ParameterizedTest
    @MethodSource("cases")
    void gradientsMatchPeft(String arch, String variant) {
        Setup s = setup(arch, variant);
        Map<String, float[]> grads = gradients(s, false);
        int checked = 0;
        double worst = 0;
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".oft_R.weight", ".oft_R.default.weight");
            float[] ref = s.ref().get(refName).toFloatArray();
            float[] got = e.getValue();
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
                norm += ref[i] * (double) ref[i];
            }
            double rel = Math.sqrt(diff / norm);
            assertTrue(norm > 0, refName + " reference is zero");
            assertTrue(rel < 1e-3, refName + ": relative error " + rel + " (limit 1e-3); first values ours "
                    + got[0] + ", " + got[1] + " ref " + ref[0] + ", " + ref[1]);
            worst = Math.max(worst, rel);
            checked++;
        }
        long expected = s.ref().names().stream().filter(n -> n.startsWith("grad.")).count();
        assertEquals(expected, checked, "every grad.* tensor of the fixture is checked");
        System.out.printf("%s/%s: %d OFT gradients, worst relative error %.3g%n", arch, variant, checked, worst);
        Map<String, float[]> recomputed = gradients(setup(arch, variant), true);
        for (var e : grads.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
    }

    /** Runs the fixture loss forward and backward; returns the OFT gradients by PEFT name. */
    static Map<String, float[]> gradients(Setup s, boolean recompute) {
        var tape = s.model().forwardTrain(s.seqs(), recompute);
        s.adapter().zeroGrad();
        s.model().backward(tape, FixtureLoss.dLogits(tape.logits(), s.ref(), s.seqs()));
        Map<String, float[]> out = new LinkedHashMap<>();
        s.adapter().peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        return out;
    }

    /**
     * The rotation blocks built from the fixture parameters match those PEFT's {@code _cayley_batch}
     * built (within 2e-6 absolute), and with coft the parameters after projection match PEFT's
     * (within 1e-6 relative); for qwen3 some layers are projected and some are not.
     */
    @ParameterizedTest
    @MethodSource("cases")
    void rotationsAndCoftProjectionMatchPeft(String arch, String variant) {
        Setup s = setup(arch, variant);
        TestSafetensors file = new TestSafetensors(root().resolve(arch).resolve(variant)
                .resolve("adapter/adapter_model.safetensors"));
        for (var e : s.adapter().layers().entrySet()) {
            Qwen3FixtureTest.assertClose(arch + "/" + variant + " rotation of " + e.getKey(),
                    s.ref().get("rotation." + e.getKey()).toFloatArray(), e.getValue().rotation().toFloatArray(), 2e-6f);
        }
        int projected = 0;
        for (OftAdapter.Param p : s.adapter().params()) {
            float[] ref = s.ref().get("value." + p.name().replace(".oft_R.weight", ".oft_R.default.weight")).toFloatArray();
            float[] got = p.value().toFloatArray();
            for (int i = 0; i < ref.length; i++) {
                assertEquals(ref[i], got[i], 1e-6 * Math.abs(ref[i]) + 1e-9, p.name() + " [" + i + "] after projection");
            }
            if (!java.util.Arrays.equals(got, file.get(p.name()).toFloatArray())) {
                projected++;
            }
        }
        if (!variant.equals("share_coft")) {
            assertEquals(0, projected, "without coft the parameters are never changed by a forward");
        } else if (arch.equals("qwen3")) {
            assertTrue(projected > 0 && projected < s.adapter().params().size(),
                    "coft eps chosen so that some layers are projected and some are not: " + projected);
        } else {
            assertEquals(s.adapter().params().size(), projected, "coft eps chosen so that every layer is projected");
        }
    }

    /** PEFT's default initialisation is the identity: the adapted model is the base model, bit for bit. */
    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void identityInitLeavesTheBaseModel(String arch) {
        Qwen3Model model = model(arch);
        TestSafetensors base = new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(base);
        float[] plain = model.forwardTrain(seqs, false).logits().toFloatArray();
        List<String> targets = arch.equals("qwen3")
                ? List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
                : List.of("q_proj", "k_proj", "v_proj", "o_proj");
        for (OftSettings settings : List.of(OftSettings.ofBlockSize(16),
                new OftSettings(0, 32, false, 6e-5, false, false, 5),
                new OftSettings(4, 0, true, 0.5, true, true, 7))) {
            OftAdapter adapter = OftAdapter.create(AdapterConfig.oft(settings, targets), model, TensorAllocator.heap());
            assertTrue(adapter.parameterCount() > 0);
            for (OftAdapter.Param p : adapter.params()) {
                assertTrue(p.value().numel() > 0 && allZero(p.value().toFloatArray()), p.name() + " starts at zero");
            }
            var tape = model.forwardTrain(seqs, false);
            assertArrayEquals(plain, tape.logits().toFloatArray(), 0f, arch + " " + settings + ": identity OFT changes logits");
            // The identity is not a dead point: the fixture loss has a gradient there.
            TestSafetensors lossRef = new TestSafetensors(root().resolve(arch).resolve("cayley/reference_oft.safetensors"));
            adapter.zeroGrad();
            model.backward(tape, FixtureLoss.dLogits(tape.logits(), lossRef, seqs));
            for (OftAdapter.Param p : adapter.params()) {
                assertTrue(!allZero(p.grad().toFloatArray()), p.name() + " has no gradient at the identity");
            }
        }
        Qwen3FixtureTest.assertClose(arch + " base logits", base.get("logits").toFloatArray(), plain, 1e-4f);
    }

    /** Disabled, the adapter leaves the base (the reference policy); enabled, it changes the logits. */
    @Test
    void disabledAdapterIsTheBaseModel() {
        Qwen3Model model = model("qwen3");
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(
                TestSafetensors.fixtures().resolve("qwen3").resolve("reference.safetensors")));
        float[] plain = model.forwardTrain(seqs, false).logits().toFloatArray();
        Path dir = root().resolve("qwen3/cayley/adapter");
        OftAdapter adapter = OftAdapter.load(AdapterConfig.read(dir),
                new TestSafetensors(dir.resolve("adapter_model.safetensors")), model, TensorAllocator.heap());
        float[] on = model.forwardTrain(seqs, false).logits().toFloatArray();
        adapter.setEnabled(false);
        float[] off = model.forwardTrain(seqs, false).logits().toFloatArray();
        adapter.setEnabled(true);
        float[] onAgain = model.forwardTrain(seqs, false).logits().toFloatArray();
        assertArrayEquals(plain, off, 0f, "disabled OFT must give the base logits exactly");
        assertArrayEquals(on, onAgain, 0f, "re-enabled OFT must give the adapted logits again");
        double maxChange = 0;
        for (int i = 0; i < on.length; i++) {
            maxChange = Math.max(maxChange, Math.abs(on[i] - plain[i]));
        }
        assertTrue(maxChange > 0.5, "the fixture adapter changes logits by " + maxChange);
    }

    /**
     * Save (config + PEFT tensors) then load into a fresh model gives the same tensors bit for bit, the
     * same logits bit for bit, and the same settings; for a fixture adapter and for a fresh one whose
     * config Orbit wrote.
     */
    @Test
    void saveThenLoadRoundTripsBitwise(@TempDir Path tmp) throws Exception {
        Setup s = setup("qwen3", "neumann");
        java.util.SplittableRandom rng = new java.util.SplittableRandom(11);
        List<String> targets = List.of("q_proj", "o_proj", "down_proj");
        Qwen3Model fresh = model("qwen3");
        OftAdapter created = OftAdapter.create(AdapterConfig.oft(new OftSettings(0, 8, false, 6e-5, false, false, 5),
                targets), fresh, TensorAllocator.heap());
        for (OftAdapter.Param p : created.params()) {
            float[] v = new float[Math.toIntExact(p.value().numel())];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (rng.nextGaussian() * 0.05);
            }
            p.value().copyFrom(Tensor.of(v, p.value().shape()));
        }
        for (var pair : List.of(Map.entry(s, "fixture"), Map.entry(new Setup(fresh, created, null, s.base(), s.seqs()),
                "created"))) {
            OftAdapter original = pair.getKey().adapter();
            Path dir = tmp.resolve(pair.getValue());
            original.save(dir);
            float[] before = pair.getKey().model().forwardTrain(s.seqs(), false).logits().toFloatArray();

            AdapterConfig cfg = AdapterConfig.read(dir);
            assertEquals(original.config().oft(), cfg.oft(), "settings after a round trip");
            assertEquals(original.config().targetModules(), cfg.targetModules());
            Qwen3Model other = model("qwen3");
            OftAdapter loaded;
            try (Checkpoint file = Checkpoint.open(dir.resolve("adapter_model.safetensors"))) {
                loaded = OftAdapter.load(cfg, file, other, TensorAllocator.heap());
            }
            assertEquals(original.params().size(), loaded.params().size());
            for (int i = 0; i < original.params().size(); i++) {
                assertEquals(original.params().get(i).name(), loaded.params().get(i).name());
                assertArrayEquals(original.params().get(i).value().toFloatArray(),
                        loaded.params().get(i).value().toFloatArray(), 0f, loaded.params().get(i).name());
            }
            assertArrayEquals(before, other.forwardTrain(s.seqs(), false).logits().toFloatArray(), 0f,
                    pair.getValue() + ": logits after save and load");
        }
    }

    /**
     * Values written into the parameters in place (an optimizer step, a slot publish) take effect at
     * the next forward with no notification: an identity adapter overwritten with the fixture's
     * values gives the fixture's logits, and zeroed again gives the base's.
     */
    @Test
    void parametersChangedInPlaceAreSeenByTheNextForward() {
        Setup s = setup("qwen3", "share_coft");
        float[] plain;
        s.adapter().setEnabled(false);
        plain = s.model().forwardTrain(s.seqs(), false).logits().toFloatArray();
        s.adapter().setEnabled(true);
        OftAdapter fresh = OftAdapter.create(s.adapter().config(), s.model(), TensorAllocator.heap());
        assertArrayEquals(plain, s.model().forwardTrain(s.seqs(), false).logits().toFloatArray(), 0f, "identity");
        TestSafetensors file = new TestSafetensors(root().resolve("qwen3/share_coft/adapter/adapter_model.safetensors"));
        for (OftAdapter.Param p : fresh.params()) {
            p.value().copyFrom(file.get(p.name()));
        }
        Qwen3FixtureTest.assertClose("after an in-place update", s.ref().get("logits").toFloatArray(),
                s.model().forwardTrain(s.seqs(), false).logits().toFloatArray(), 1e-4f);
        fresh.params().forEach(p -> p.value().fill(0));
        assertArrayEquals(plain, s.model().forwardTrain(s.seqs(), false).logits().toFloatArray(), 0f, "zeroed again");
    }

    /** The loader behind {@code orbit score --adapter} picks OFT by {@code peft_type} and reproduces PEFT's logits. */
    @Test
    void loadedModelLoadsAnOftAdapterDirectory() {
        try (var lm = org.orbitrl.model.LoadedModel.load(TestSafetensors.fixtures().resolve("qwen3_moe"), Backends.cpu(),
                org.orbitrl.model.BaseFormat.BF16)) {
            Path dir = root().resolve("qwen3_moe/share_coft");
            Adapter adapter = lm.loadAdapter(dir.resolve("adapter"));
            assertTrue(adapter instanceof OftAdapter, "an OFT directory gives an OftAdapter, got " + adapter.getClass());
            List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(
                    TestSafetensors.fixtures().resolve("qwen3_moe").resolve("reference.safetensors")));
            List<org.orbitrl.model.arch.CausalLM.Segment> batch = seqs.stream()
                    .map(t -> new org.orbitrl.model.arch.CausalLM.Segment(t, null)).toList();
            Qwen3FixtureTest.assertClose("qwen3_moe/share_coft through LoadedModel",
                    new TestSafetensors(dir.resolve("reference_oft.safetensors")).get("logits").toFloatArray(),
                    lm.model().forward(batch).toFloatArray(), 1e-4f);
        }
    }

    /** The exact Cayley blocks are orthogonal: ‖RᵀR − I‖_max ≤ 1e-5 (f32 rounding of a double-precision build). */
    @Test
    void exactCayleyRotationsAreOrthogonal() {
        Setup s = setup("qwen3", "cayley");
        double worst = 0;
        for (var e : s.adapter().layers().entrySet()) {
            worst = Math.max(worst, orthogonalityError(e.getValue().rotation(), e.getValue().layout().blockSize()));
        }
        assertTrue(worst < 1e-5, "exact Cayley: max |RᵀR − I| = " + worst);
        System.out.printf("exact Cayley: max |RᵀR - I| = %.3g%n", worst);
    }

    /**
     * The Cayley-Neumann blocks are orthogonal up to the series' truncation:
     * ‖RᵀR − I‖_max ≤ 2s^m + s^{2m} + 1e-5 with s = ‖Q‖_F ≥ ‖Q‖₂ and m = max(T − 1, 3), from
     * R = (I − Q^m)·(I + Q)(I − Q)⁻¹ (see OftMath). The fixture's parameters are large enough that
     * the series is measurably non-orthogonal (checked, so the bound is not vacuous here).
     */
    @ParameterizedTest
    @ValueSource(strings = {"neumann", "share_coft"})
    void cayleyNeumannRotationsMeetTheTruncationBound(String variant) {
        Setup s = setup("qwen3", variant);
        int m = Math.max(s.adapter().config().oft().neumannTerms() - 1, 3);
        double largest = 0;
        for (var e : s.adapter().layers().entrySet()) {
            OftLinear layer = e.getValue();
            int b = layer.layout().blockSize();
            int n = layer.layout().elements();
            Tensor rot = layer.rotation();
            float[] q = s.adapter().params().stream()
                    .filter(p -> p.name().equals("base_model.model." + e.getKey() + ".oft_R.weight"))
                    .findFirst().orElseThrow().value().toFloatArray();
            for (int j = 0; j < layer.layout().storedBlocks(); j++) {
                double ss = 0;
                for (int k = 0; k < n; k++) {
                    ss += 2.0 * q[j * n + k] * q[j * n + k];
                }
                double sn = Math.sqrt(ss);
                double bound = 2 * Math.pow(sn, m) + Math.pow(sn, 2 * m) + 1e-5;
                double err = orthogonalityError(rot.select(0, j).reshape(1, b, b), b);
                assertTrue(err <= bound, e.getKey() + " block " + j + ": |RᵀR − I| " + err + " > bound " + bound);
                largest = Math.max(largest, err);
            }
        }
        assertTrue(largest > 1e-4, "fixture rotations are too close to orthogonal to test the bound: " + largest);
        System.out.printf("Cayley-Neumann (%s): max |RᵀR - I| = %.3g%n", variant, largest);
    }

    /**
     * Through the memory accounting: the adapter allocates its parameters and its gradients (exactly
     * one scalar per parameter) up front, and a whole forward + backward step allocates nothing more
     * through it (the rotation blocks are per-call buffers of the backend).
     */
    @Test
    void gradientMemoryIsExactlyTheAdapterSize() {
        Qwen3Model model = model("qwen3_moe");
        Map<org.orbitrl.kernels.MemoryCategory, Long> elements = new java.util.EnumMap<>(org.orbitrl.kernels.MemoryCategory.class);
        TensorAllocator recording = (category, dtype, shape) -> {
            elements.merge(category, java.util.Arrays.stream(shape).reduce(1, (x, y) -> x * y), Long::sum);
            return TensorAllocator.heap().allocate(category, dtype, shape);
        };
        Path dir = root().resolve("qwen3_moe/neumann");
        OftAdapter adapter = OftAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, recording);
        long params = adapter.parameterCount();
        assertEquals(8L * 4 * 120, params, "8 layers of 4 blocks of 16·15/2 parameters");
        assertEquals(Map.of(org.orbitrl.kernels.MemoryCategory.ADAPTER_GRADS, params,
                org.orbitrl.kernels.MemoryCategory.ADAPTER_PARAMS, params), elements);
        Map<org.orbitrl.kernels.MemoryCategory, Long> before = Map.copyOf(elements);
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_oft.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(
                TestSafetensors.fixtures().resolve("qwen3_moe").resolve("reference.safetensors")));
        var tape = model.forwardTrain(seqs, false);
        model.backward(tape, FixtureLoss.dLogits(tape.logits(), ref, seqs));
        assertEquals(before, elements, "a training step allocates nothing through the adapter's allocator");
    }

    /** max over blocks and entries of |RᵀR − I| for rotation blocks [n, b, b]. */
    static double orthogonalityError(Tensor rotation, int b) {
        float[] r = rotation.toFloatArray();
        double worst = 0;
        for (int o = 0; o < r.length; o += b * b) {
            for (int i = 0; i < b; i++) {
                for (int j = 0; j < b; j++) {
                    double acc = 0;
                    for (int k = 0; k < b; k++) {
                        acc += (double) r[o + k * b + i] * r[o + k * b + j];
                    }
                    worst = Math.max(worst, Math.abs(acc - (i == j ? 1 : 0)));
                }
            }
        }
        return worst;
    }

    private static boolean allZero(float[] v) {
        for (float f : v) {
            if (f != 0) {
                return false;
            }
        }
        return true;
    }
}
