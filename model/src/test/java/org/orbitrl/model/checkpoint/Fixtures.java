package org.orbitrl.model.checkpoint;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/** Test helpers: the fixture folder and seeded random tensors. */
final class Fixtures {
    private Fixtures() {
    }

    static Path hf() {
        String p = System.getProperty("orbit.fixtures");
        Path path = Path.of(p != null ? p : "../shared/fixtures").resolve("hf").toAbsolutePath().normalize();
        if (!Files.isDirectory(path)) {
            throw new IllegalStateException("fixtures not found at " + path + " (system property orbit.fixtures)");
        }
        return path;
    }

    /** A tensor of {@code dtype} whose bytes are seeded random (never all zero). */
    static Tensor random(Random rnd, DType dtype, long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), dtype, shape);
        MemorySegment s = t.segment();
        for (long i = 0; i < t.byteSize(); i++) {
            s.set(ValueLayout.JAVA_BYTE, i, (byte) rnd.nextInt(256));
        }
        return t;
    }

    /** The bytes of a (possibly strided) tensor in row-major order. */
    static byte[] bytes(Tensor t) {
        Tensor c = t.contiguous();
        return c.segment().asSlice(c.byteOffset(), c.byteSize()).toArray(ValueLayout.JAVA_BYTE);
    }
}
