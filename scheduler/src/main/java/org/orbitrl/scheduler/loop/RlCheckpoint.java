package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * What an RL job checkpoint holds, as named sections: {@code state} (step, adapter version, the
 * sample-log index consumed, samples trained), {@code adapter} (every trainable tensor, bitwise)
 * and {@code optimizer} (AdamW moments and step). Restoring them and reading the sample log after
 * the consumed index continues the job exactly as if it had not stopped.
 */
final class RlCheckpoint {
    private RlCheckpoint() {
    }

    static void write(CheckpointWriter out, RlJobRunner r) throws IOException {
        RunnerState s = r.state();
        ByteArrayOutputStream st = new ByteArrayOutputStream();
        try (DataOutputStream d = new DataOutputStream(st)) {
            d.writeInt(1);
            d.writeLong(s.step());
            d.writeLong(s.adapterVersion());
            d.writeLong(s.consumedIndex());
            d.writeLong(s.samplesTrained());
        }
        out.section("state", st.toByteArray());
        Map<String, Tensor> adapter = new LinkedHashMap<>();
        for (Adapter.Param p : r.trainerAdapter().params()) {
            adapter.put(p.name(), r.adapterMemory().toHost(p.value()));
        }
        out.section("adapter", tensors(adapter));
        out.section("optimizer", tensors(r.trainer().optimizer().exportState()));
    }

    static void restore(Checkpoint ckpt, RlJobRunner r) throws IOException {
        for (String section : List.of("state", "adapter", "optimizer")) {
            if (!ckpt.has(section)) {
                throw new IOException(ckpt.file() + ": checkpoint has no '" + section + "' section");
            }
        }
        try (DataInputStream d = new DataInputStream(new ByteArrayInputStream(ckpt.bytes("state")))) {
            int version = d.readInt();
            if (version != 1) {
                throw new IOException(ckpt.file() + ": state section version " + version + ", expected 1");
            }
            r.restoreState(new RunnerState(d.readLong(), d.readLong(), d.readLong(), d.readLong()));
        }
        Map<String, Tensor> adapter = readTensors(ckpt.bytes("adapter"), ckpt + " adapter");
        for (Adapter.Param p : r.trainerAdapter().params()) {
            Tensor t = adapter.get(p.name());
            if (t == null || !java.util.Arrays.equals(t.shape(), p.value().shape())) {
                throw new IOException(ckpt.file() + ": adapter tensor " + p.name() + " is missing or has another shape "
                        + "(was the adapter section of the job file changed?)");
            }
            r.adapterMemory().copy(t, p.value());
        }
        r.trainer().optimizer().importState(readTensors(ckpt.bytes("optimizer"), ckpt + " optimizer"));
    }

    /** The section of an expert-parallel job's checkpoint holding each rank's consumed index in its own sample log. */
    static final String RANK_CONSUMED = "rank_consumed";

    /** Writes each rank's consumed index (rank order). */
    static void writeRankConsumed(CheckpointWriter out, long[] consumed) throws IOException {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        try (DataOutputStream d = new DataOutputStream(b)) {
            d.writeInt(consumed.length);
            for (long c : consumed) {
                d.writeLong(c);
            }
        }
        out.section(RANK_CONSUMED, b.toByteArray());
    }

    /**
     * Rank {@code rank}'s consumed index in its own sample log, from an expert-parallel job's checkpoint; {@code fallback}
     * (rank 0's) where the checkpoint has none (one written before ranks kept their own).
     */
    static long rankConsumedIndex(Checkpoint ckpt, int rank, long fallback) throws IOException {
        if (!ckpt.has(RANK_CONSUMED)) {
            return fallback;
        }
        try (DataInputStream d = new DataInputStream(new ByteArrayInputStream(ckpt.bytes(RANK_CONSUMED)))) {
            int n = d.readInt();
            if (rank >= n) {
                throw new IOException(ckpt.file() + ": section " + RANK_CONSUMED + " holds " + n + " ranks, not rank " + rank
                        + " (was placement.devices changed?)");
            }
            long out = fallback;
            for (int r = 0; r <= rank; r++) {
                out = d.readLong();
            }
            return out;
        }
    }

    /** A stable checksum of the adapter's values (CRC32C over every tensor's bytes, in order). */
    static String checksum(Adapter a, TensorAllocator memory) {
        CRC32C crc = new CRC32C();
        for (Adapter.Param p : a.params()) {
            Tensor v = memory.toHost(p.value());   // the tensor itself in host memory
            crc.update(v.segment().asSlice(v.byteOffset(), v.byteSize()).asByteBuffer());
        }
        return HexFormat.of().toHexDigits((int) crc.getValue());
    }

    static byte[] tensors(Map<String, Tensor> named) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream d = new DataOutputStream(bytes)) {
            d.writeInt(named.size());
            for (var e : named.entrySet()) {
                Tensor t = e.getValue().contiguous();
                d.writeUTF(e.getKey());
                d.writeUTF(t.dtype().name());
                d.writeInt(t.rank());
                for (long dim : t.shape()) {
                    d.writeLong(dim);
                }
                byte[] raw = t.segment().asSlice(t.byteOffset(), t.byteSize()).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                d.writeInt(raw.length);
                d.write(raw);
            }
        }
        return bytes.toByteArray();
    }

    static Map<String, Tensor> readTensors(byte[] data, String where) throws IOException {
        Map<String, Tensor> out = new LinkedHashMap<>();
        try (DataInputStream d = new DataInputStream(new ByteArrayInputStream(data))) {
            int n = d.readInt();
            for (int i = 0; i < n; i++) {
                String name = d.readUTF();
                DType dt = DType.valueOf(d.readUTF());
                long[] shape = new long[d.readInt()];
                for (int k = 0; k < shape.length; k++) {
                    shape[k] = d.readLong();
                }
                byte[] raw = new byte[d.readInt()];
                d.readFully(raw);
                Tensor t = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dt, shape);
                if (raw.length != t.byteSize()) {
                    throw new IOException(where + ": tensor " + name + " holds " + raw.length + " bytes, expected " + t.byteSize());
                }
                java.lang.foreign.MemorySegment.copy(java.lang.foreign.MemorySegment.ofArray(raw), 0, t.segment(), 0, raw.length);
                out.put(name, t);
            }
        }
        return out;
    }
}
