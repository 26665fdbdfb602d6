package org.orbitrl.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.WeightSource;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/** A minimal safetensors reader for test fixtures (whole file read into memory). */
public final class TestSafetensors implements WeightSource {
    private final Map<String, Tensor> tensors = new LinkedHashMap<>();
    private final Path file;

    public TestSafetensors(Path file) {
        this.file = file;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment all = Arena.ofAuto().allocate(ch.size(), 64);
            ch.read(all.asByteBuffer());
            long n = all.get(ValueLayout.JAVA_LONG_UNALIGNED, 0);
            byte[] hdr = all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            JsonNode root = new ObjectMapper().readTree(hdr);
            var it = root.properties().iterator();
            while (it.hasNext()) {
                var e = it.next();
                if (e.getKey().equals("__metadata__")) {
                    continue;
                }
                JsonNode v = e.getValue();
                DType dt = DType.fromSafetensors(v.get("dtype").asText());
                long[] shape = new long[v.get("shape").size()];
                for (int i = 0; i < shape.length; i++) {
                    shape[i] = v.get("shape").get(i).asLong();
                }
                long begin = v.get("data_offsets").get(0).asLong();
                long end = v.get("data_offsets").get(1).asLong();
                tensors.put(e.getKey(), Tensor.wrap(all.asSlice(8 + n + begin, end - begin), dt, shape));
            }
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + file, e);
        }
    }

    public static Path fixtures() {
        return Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");
    }

    public Tensor get(String name) {
        Tensor t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException(file + ": no tensor " + name);
        }
        return t;
    }

    @Override
    public boolean has(String name) {
        return tensors.containsKey(name);
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        Tensor t = get(name);
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException(file + ": " + name + " has shape " + Arrays.toString(t.shape())
                    + ", expected " + Arrays.toString(shape));
        }
        return t;
    }

    @Override
    public Set<String> names() {
        return tensors.keySet();
    }
}
