package org.orbitrl.model.adapter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Shared pieces of the adapter fixture tests: the fixture's inputs, its loss gradient, an f32 safetensors writer. */
final class FixtureLoss {
    private FixtureLoss() {
    }

    /** The fixture's token rows, from {@code input_ids} [B, T] i64. */
    static List<int[]> sequences(TestSafetensors reference) {
        Tensor ids = reference.get("input_ids");
        List<int[]> seqs = new ArrayList<>();
        for (int b = 0; b < ids.size(0); b++) {
            int[] s = new int[ids.size(1)];
            for (int t = 0; t < s.length; t++) {
                s[t] = (int) ids.getLong(b, t);
            }
            seqs.add(s);
        }
        return seqs;
    }

    /**
     * dLoss/dLogits [B·T, V] for loss = −Σ adv[b]·logp(ids[b,t+1] | ids[b,:t+1])·mask[b,t+1] / Σ mask[:,1:],
     * with {@code advantages} [B] and {@code completion_mask} [B, T] from {@code ref}.
     */
    static Tensor dLogits(Tensor logits, TestSafetensors ref, List<int[]> seqs) {
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int b = seqs.size();
        int t = seqs.get(0).length;
        int v = logits.size(1);
        double denom = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j + 1 < t; j++) {
                float c = (float) (adv[i] * mask.getFloat(i, j + 1) / denom);
                int row = (i * t + j) * v;
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                int target = seqs.get(i)[j + 1];
                for (int k = 0; k < v; k++) {
                    float p = (float) (Math.exp(lg[row + k] - max) / sum);
                    d[row + k] = -c * ((k == target ? 1f : 0f) - p);
                }
            }
        }
        return Tensor.of(d, (long) b * t, v);
    }

    /** Writes f32 tensors as safetensors (header padded to 8 bytes, {@code format: pt} metadata, as PEFT writes). */
    static void writeSafetensors(Path file, Map<String, Tensor> tensors) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode header = json.createObjectNode();
        header.putObject("__metadata__").put("format", "pt");
        long offset = 0;
        for (var e : tensors.entrySet()) {
            Tensor t = e.getValue();
            if (t.dtype() != DType.F32) {
                throw new IllegalArgumentException(e.getKey() + ": only f32 is written, got " + t.dtype());
            }
            ObjectNode n = header.putObject(e.getKey());
            n.put("dtype", "F32");
            var shape = n.putArray("shape");
            for (long d : t.shape()) {
                shape.add(d);
            }
            n.putArray("data_offsets").add(offset).add(offset + 4 * t.numel());
            offset += 4 * t.numel();
        }
        byte[] h = json.writeValueAsBytes(header);
        int padded = (h.length + 7) / 8 * 8;
        ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(8 + padded + offset)).order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(padded).put(h);
        buf.put(" ".repeat(padded - h.length).getBytes(StandardCharsets.US_ASCII));
        for (Tensor t : tensors.values()) {
            for (float f : t.toFloatArray()) {
                buf.putFloat(f);
            }
        }
        Files.write(file, buf.array());
    }
}
