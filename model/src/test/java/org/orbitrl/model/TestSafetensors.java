package org.orbitrl.model;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.nn.WeightSource;

import java.nio.file.Path;
import java.util.Set;

/**
 * Fixture files for tests, read through {@link Checkpoint}. Kept open for the test JVM's life
 * (the fixtures are small and read-only).
 */
public final class TestSafetensors implements WeightSource {
    private final Checkpoint ckpt;

    public TestSafetensors(Path file) {
        this.ckpt = Checkpoint.open(file);
    }

    /** {@code shared/fixtures/hf}, from the {@code orbit.fixtures} property the build sets. */
    public static Path fixtures() {
        return Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");
    }

    public Tensor get(String name) {
        return ckpt.tensor(name);
    }

    @Override
    public boolean has(String name) {
        return ckpt.has(name);
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        return ckpt.tensor(name, shape);
    }

    @Override
    public Set<String> names() {
        return ckpt.names();
    }
}
