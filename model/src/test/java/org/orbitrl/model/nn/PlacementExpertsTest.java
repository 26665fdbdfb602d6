package org.orbitrl.model.nn;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.Int4G32Asym;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.StrictAllocator;
import org.orbitrl.model.StrictBackend;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link Placement#experts}: on a device, experts of one quantized format placed back to back, read back as one
 * stacked matrix ({@link ExpertWeights#stacked}) whose rows are the experts' rows in order, bit for bit; anything else
 * placed expert by expert. The device is {@link StrictBackend}'s memory, which the host reaches only by copies.
 */
class PlacementExpertsTest {
    private static final int EXPERTS = 5;
    private static final int ROWS = 24;
    private static final int COLS = 64;

    private static Weight[] quantizedExperts(QuantFormat format, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        Weight[] w = new Weight[EXPERTS];
        for (int e = 0; e < EXPERTS; e++) {
            float[] v = new float[ROWS * COLS];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (r.nextGaussian() * 0.05 + (format == Int4G32Asym.INSTANCE ? 0.02 : 0));
            }
            w[e] = Weight.of(format.quantize(Tensor.of(v, ROWS, COLS)));
        }
        return w;
    }

    private static QuantizedTensor q(Weight w) {
        return ((Weight.Quantized) w).w();
    }

    /** The dequantized rows of {@code w}, read through host copies of its parts. */
    private static float[] rows(TensorAllocator a, QuantizedTensor w) {
        QuantizedTensor host = new QuantizedTensor(w.format(), w.rows(), w.cols(), a.toHost(w.codes()), a.toHost(w.scales()),
                w.zeros() == null ? null : a.toHost(w.zeros()), w.globalScale());
        float[] out = new float[Math.toIntExact(w.rows() * w.cols())];
        float[] row = new float[Math.toIntExact(w.cols())];
        for (int i = 0; i < w.rows(); i++) {
            host.format().dequantizeRow(host, i, row);
            System.arraycopy(row, 0, out, i * row.length, row.length);
        }
        return out;
    }

    @Test
    void quantizedExpertsOnADeviceLieBackToBackAndReadAsOneStackedMatrix() {
        StrictBackend device = new StrictBackend();
        TensorAllocator a = device.allocator();
        for (QuantFormat format : new QuantFormat[]{Int4G32.INSTANCE, Int4G32Asym.INSTANCE}) {
            Weight[] host = quantizedExperts(format, 71);
            Weight[] placed = Placement.experts(a, host);
            QuantizedTensor[] quantized = new QuantizedTensor[EXPERTS];
            for (int e = 0; e < EXPERTS; e++) {
                quantized[e] = q(placed[e]);
                assertEquals(format, quantized[e].format());
                // each expert as placed holds exactly the host expert's values
                assertArrayEquals(rows(TensorAllocator.heap(), q(host[e])), rows(a, quantized[e]), format.name() + " expert " + e);
            }
            assertFalse(eachItsOwn(placed), format.name() + ": the experts share their allocations");
            QuantizedTensor stacked = new ExpertWeights(ROWS, COLS, new Tensor[EXPERTS], quantized).stacked();
            assertNotNull(stacked, format.name() + ": experts placed back to back read as one matrix");
            assertEquals((long) EXPERTS * ROWS, stacked.rows());
            assertEquals(COLS, stacked.cols());
            float[] all = rows(a, stacked);
            for (int e = 0; e < EXPERTS; e++) {
                float[] want = rows(TensorAllocator.heap(), q(host[e]));
                float[] got = new float[want.length];
                System.arraycopy(all, e * want.length, got, 0, want.length);
                assertArrayEquals(want, got, format.name() + ": rows of expert " + e + " in the stacked matrix");
            }
        }
    }

    /**
     * The form that makes each expert as it is placed: every expert asked once, in order, each copied before the next is
     * asked (the stack's pieces so far already hold their experts); the experts read as one stacked matrix of the same
     * rows as the array form's; an expert of another format is placed alone, and then there is no stacked matrix; host
     * memory keeps each as made.
     */
    @Test
    void expertsMadeOneAtATimeArePlacedAsTheyAreMade() {
        StrictBackend device = new StrictBackend();
        TensorAllocator a = device.allocator();
        Weight[] host = quantizedExperts(Int4G32.INSTANCE, 77);
        java.util.List<Integer> asked = new java.util.ArrayList<>();
        Weight[] placed = Placement.experts(a, EXPERTS, e -> {
            asked.add(e);
            return host[e];
        });
        assertEquals(java.util.List.of(0, 1, 2, 3, 4), asked, "each expert asked once, in order");
        QuantizedTensor[] quantized = new QuantizedTensor[EXPERTS];
        for (int e = 0; e < EXPERTS; e++) {
            quantized[e] = q(placed[e]);
            assertArrayEquals(rows(TensorAllocator.heap(), q(host[e])), rows(a, quantized[e]), "expert " + e);
        }
        QuantizedTensor stacked = new ExpertWeights(ROWS, COLS, new Tensor[EXPERTS], quantized).stacked();
        assertNotNull(stacked, "experts placed as made read as one matrix");
        assertArrayEquals(rows(a, new ExpertWeights(ROWS, COLS, new Tensor[EXPERTS],
                java.util.Arrays.stream(Placement.experts(a, host)).map(PlacementExpertsTest::q).toArray(QuantizedTensor[]::new))
                .stacked()), rows(a, stacked), "the same stacked rows as the array form's");

        // each expert is copied into its piece (its codes and its scales) before the next one is asked
        StrictAllocator sa = device.allocator();
        int before = sa.copies();
        Placement.experts(a, EXPERTS, e -> {
            assertEquals(before + 2 * e, sa.copies(), "experts copied before expert " + e + " is made");
            return host[e];
        });
        assertEquals(before + 2 * EXPERTS, sa.copies());

        Weight[] mixed = quantizedExperts(Int4G32.INSTANCE, 78);
        mixed[2] = quantizedExperts(Int4G32Asym.INSTANCE, 79)[2];
        Weight[] placedMixed = Placement.experts(a, EXPERTS, e -> mixed[e]);
        assertNull(weights(placedMixed).stacked(), "another format among them: no stacked matrix");
        for (int e = 0; e < EXPERTS; e++) {
            assertArrayEquals(rows(TensorAllocator.heap(), q(mixed[e])), rows(a, q(placedMixed[e])), "mixed expert " + e);
        }
        Weight[] same = Placement.experts(TensorAllocator.heap(), EXPERTS, e -> host[e]);
        for (int e = 0; e < EXPERTS; e++) {
            assertSame(host[e], same[e], "host memory: expert " + e + " as made");
        }
    }

    @Test
    void hostMemoryMixedFormsAndMissingExpertsArePlacedOneByOne() {
        Weight[] host = quantizedExperts(Int4G32.INSTANCE, 72);
        // host memory: the weights stay as they are (no copy), each its own allocation, so no stacked matrix
        Weight[] same = Placement.experts(TensorAllocator.heap(), host);
        for (int e = 0; e < EXPERTS; e++) {
            assertSame(host[e], same[e]);
        }
        assertNull(weights(same).stacked(), "separate host allocations are not one matrix");

        StrictBackend device = new StrictBackend();
        TensorAllocator a = device.allocator();
        Weight[] missing = host.clone();
        missing[3] = null;   // an expert another rank holds
        Weight[] placed = Placement.experts(a, missing);
        assertNull(placed[3]);
        for (int e = 0; e < EXPERTS; e++) {
            if (e != 3) {
                assertArrayEquals(rows(TensorAllocator.heap(), q(host[e])), rows(a, q(placed[e])), "expert " + e);
            }
        }
        assertNull(weights(placed).stacked(), "an expert not held: no stacked matrix");
        assertTrue(eachItsOwn(placed), "an expert not held: the others placed one by one");

        Weight[] mixed = quantizedExperts(Int4G32.INSTANCE, 73);
        mixed[1] = quantizedExperts(Int4G32Asym.INSTANCE, 74)[1];   // another format
        Weight[] placedMixed = Placement.experts(a, mixed);
        assertNull(weights(placedMixed).stacked(), "mixed formats: no stacked matrix");
        assertTrue(eachItsOwn(placedMixed), "mixed formats are placed one by one");

        Weight[] dense = quantizedExperts(Int4G32.INSTANCE, 75);
        float[] v = new float[ROWS * COLS];
        SplittableRandom r = new SplittableRandom(76);
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextGaussian();
        }
        dense[0] = Weight.of(Tensor.of(v, ROWS, COLS).to(DType.BF16));
        Weight[] placedDense = Placement.experts(a, dense);
        assertNull(weights(placedDense).stacked());
        assertTrue(eachItsOwn(placedDense), "a full-precision expert among them: placed one by one");
        assertArrayEquals(rows(TensorAllocator.heap(), q(dense[2])), rows(a, q(placedDense[2])));
    }

    /** Whether every placed expert's codes are an allocation of their own (distinct segments). */
    private static boolean eachItsOwn(Weight[] w) {
        java.util.Set<Long> bases = new java.util.HashSet<>();
        int held = 0;
        for (Weight x : w) {
            if (x == null) {
                continue;
            }
            held++;
            bases.add(x instanceof Weight.Quantized q ? q.w().codes().segment().address() : ((Weight.Dense) x).w().segment().address());
        }
        return bases.size() == held;
    }

    private static ExpertWeights weights(Weight[] w) {
        Tensor[] dense = new Tensor[w.length];
        QuantizedTensor[] quantized = new QuantizedTensor[w.length];
        for (int e = 0; e < w.length; e++) {
            if (w[e] instanceof Weight.Quantized q) {
                quantized[e] = q.w();
            } else if (w[e] instanceof Weight.Dense d) {
                dense[e] = d.w();
            }
        }
        return new ExpertWeights(ROWS, COLS, dense, quantized);
    }
}
