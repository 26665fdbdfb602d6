package org.orbitrl.model.checkpoint;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.WeightSource;

/**
 * The weights of one model directory: a single {@code model.safetensors}, or shards listed by
 * {@code model.safetensors.index.json} ({@code weight_map}: tensor name to shard file). Opening
 * checks that every indexed tensor is in the shard the index names and that every shard tensor is
 * indexed. Tensors are zero-copy views over the memory-mapped files, valid until {@link #close}.
 */
public final class Checkpoint implements WeightSource, AutoCloseable {
    /** File name of an unsharded checkpoint. */
    public static final String SINGLE_FILE = "model.safetensors";
    /** File name of the shard index. */
    public static final String INDEX_FILE = "model.safetensors.index.json";
    private static final int LIST_LIMIT = 20;
    private static final ObjectMapper JSON = new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    private final Path dir;
    private final List<SafetensorsFile> files;
    private final Map<String, SafetensorsFile> byName; // sorted by name

    private Checkpoint(Path dir, List<SafetensorsFile> files, Map<String, SafetensorsFile> byName) {
        this.dir = dir;
        this.files = files;
        this.byName = byName;
    }

    /**
     * Opens {@code path}: a model directory (sharded through its index, or a single
     * {@code model.safetensors}), or one {@code .safetensors} file.
     */
    public static Checkpoint open(Path path) {
        if (Files.isRegularFile(path)) {
            return single(path.toAbsolutePath().getParent(), path);
        }
        if (!Files.isDirectory(path)) {
            throw new CheckpointException(path, null, "no such file or directory");
        }
        Path index = path.resolve(INDEX_FILE);
        if (Files.isRegularFile(index)) {
            return sharded(path, index);
        }
        Path single = path.resolve(SINGLE_FILE);
        if (Files.isRegularFile(single)) {
            return single(path, single);
        }
        throw new CheckpointException(path, null, "holds neither " + SINGLE_FILE + " nor " + INDEX_FILE);
    }

    private static Checkpoint single(Path dir, Path file) {
        SafetensorsFile f = SafetensorsFile.open(file);
        Map<String, SafetensorsFile> byName = new TreeMap<>();
        for (String name : f.tensors().keySet()) {
            byName.put(name, f);
        }
        return new Checkpoint(dir, List.of(f), Collections.unmodifiableMap(byName));
    }

    private static Checkpoint sharded(Path dir, Path index) {
        Map<String, String> weightMap = readWeightMap(index);
        Map<String, SafetensorsFile> shards = new LinkedHashMap<>();
        try {
            for (String shard : new TreeSet<>(weightMap.values())) {
                Path p = dir.resolve(shard).normalize();
                if (!p.getParent().equals(dir.normalize()) || !Files.isRegularFile(p)) {
                    String tensor = weightMap.entrySet().stream().filter(e -> e.getValue().equals(shard))
                            .map(Map.Entry::getKey).sorted().findFirst().orElse(null);
                    throw new CheckpointException(index, tensor, "names shard '" + shard
                            + "', which is not a file in " + dir);
                }
                shards.put(shard, SafetensorsFile.open(p));
            }
            Map<String, SafetensorsFile> byName = new TreeMap<>();
            for (var e : new TreeMap<>(weightMap).entrySet()) {
                SafetensorsFile f = shards.get(e.getValue());
                if (!f.has(e.getKey())) {
                    throw new CheckpointException(index, e.getKey(), "is indexed in shard " + e.getValue()
                            + " but that file does not hold it");
                }
                byName.put(e.getKey(), f);
            }
            for (SafetensorsFile f : shards.values()) {
                for (String name : f.tensors().keySet()) {
                    if (!f.path().getFileName().toString().equals(weightMap.get(name))) {
                        String where = weightMap.containsKey(name) ? "is indexed in " + weightMap.get(name)
                                : "is not in " + INDEX_FILE;
                        throw new CheckpointException(f.path(), name, "is in this shard but " + where);
                    }
                }
            }
            Checkpoint c = new Checkpoint(dir, List.copyOf(shards.values()), Collections.unmodifiableMap(byName));
            shards = null;
            return c;
        } finally {
            if (shards != null) {
                shards.values().forEach(SafetensorsFile::close);
            }
        }
    }

    private static Map<String, String> readWeightMap(Path index) {
        JsonNode root;
        try {
            root = JSON.readTree(index.toFile());
        } catch (JsonProcessingException e) {
            throw new CheckpointException(index, null, "invalid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new CheckpointException(index, null, "cannot read: " + e.getMessage(), e);
        }
        JsonNode wm = root == null ? null : root.get("weight_map");
        if (wm == null || !wm.isObject()) {
            throw new CheckpointException(index, null, "expected an object with a 'weight_map' object of tensor name to shard file");
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (var it = wm.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            if (!e.getValue().isTextual()) {
                throw new CheckpointException(index, e.getKey(), "weight_map value must be a shard file name, got "
                        + e.getValue());
            }
            out.put(e.getKey(), e.getValue().textValue());
        }
        return out;
    }

    // ---------------------------------------------------------------- access

    /** The model directory. */
    public Path dir() {
        return dir;
    }

    /** The safetensors files, in shard-name order. */
    public List<SafetensorsFile> files() {
        return files;
    }

    /** All tensor names, sorted. */
    @Override
    public Set<String> names() {
        return byName.keySet();
    }

    @Override
    public boolean has(String name) {
        return byName.containsKey(name);
    }

    /** The file that holds {@code name}. */
    public Path fileOf(String name) {
        return file(name).path();
    }

    /** The header entry of {@code name}. */
    public TensorInfo info(String name) {
        return file(name).info(name);
    }

    private SafetensorsFile file(String name) {
        SafetensorsFile f = byName.get(name);
        if (f == null) {
            throw new CheckpointException(dir, name, "not in this checkpoint (" + byName.size() + " tensors in "
                    + files.size() + " file" + (files.size() == 1 ? "" : "s") + ")");
        }
        return f;
    }

    /** Tensor {@code name}, a read-only view over the mapped file. */
    public Tensor tensor(String name) {
        return file(name).tensor(name);
    }

    /** Tensor {@code name} of any dtype, checked to have exactly {@code shape} ({@code -1} matches any size). */
    @Override
    public Tensor tensor(String name, long... shape) {
        return tensor(name, null, shape);
    }

    /**
     * Tensor {@code name}, checked to have dtype {@code expected} (null: any) and exactly
     * {@code shape} ({@code -1} matches any size). A mismatch throws naming tensor and file.
     */
    public Tensor tensor(String name, DType expected, long... shape) {
        SafetensorsFile f = file(name);
        TensorInfo t = f.info(name);
        long[] actual = t.shape();
        boolean ok = (expected == null || expected == t.dtype()) && actual.length == shape.length;
        for (int i = 0; ok && i < shape.length; i++) {
            ok = shape[i] < 0 || shape[i] == actual[i];
        }
        if (!ok) {
            throw new CheckpointException(f.path(), name, "expected " + (expected == null ? "" : expected.safetensorsName())
                    + Arrays.toString(shape) + ", got " + t.describe());
        }
        return f.tensor(name);
    }

    /**
     * Throws unless the checkpoint holds exactly {@code expected}: the message lists every missing
     * and every unexpected name (sorted; the first {@value #LIST_LIMIT} of each, then a count).
     */
    public void requireExactly(Set<String> expected) {
        SortedSet<String> missing = new TreeSet<>(expected);
        missing.removeAll(byName.keySet());
        SortedSet<String> unexpected = new TreeSet<>(byName.keySet());
        unexpected.removeAll(expected);
        if (missing.isEmpty() && unexpected.isEmpty()) {
            return;
        }
        StringBuilder sb = new StringBuilder("tensor names do not match the model: ");
        sb.append(missing.size()).append(" missing, ").append(unexpected.size()).append(" unexpected");
        if (!missing.isEmpty()) {
            sb.append("\n  missing: ").append(list(missing));
        }
        if (!unexpected.isEmpty()) {
            sb.append("\n  unexpected: ").append(list(unexpected));
        }
        throw new CheckpointException(dir, null, sb.toString());
    }

    private static String list(Collection<String> names) {
        List<String> shown = new ArrayList<>();
        for (String n : names) {
            if (shown.size() == LIST_LIMIT) {
                break;
            }
            shown.add(n);
        }
        return String.join(", ", shown) + (names.size() > LIST_LIMIT ? ", ... and " + (names.size() - LIST_LIMIT) + " more" : "");
    }

    /** Unmaps every file; tensors obtained from this checkpoint become invalid. */
    @Override
    public void close() {
        for (SafetensorsFile f : files) {
            f.close();
        }
    }

    @Override
    public String toString() {
        return "Checkpoint[" + dir + ", " + byName.size() + " tensors in " + files.size() + " files]";
    }
}
