package org.orbitrl.memory.plan;

import java.nio.file.Files;
import java.nio.file.Path;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

/** Where the tests find real configs ({@code orbit.models}) and fixture checkpoints ({@code orbit.fixtures}). */
final class TestModels {
    private TestModels() {
    }

    static Path models() {
        return dir("orbit.models");
    }

    static Path fixtures() {
        return dir("orbit.fixtures").resolve("hf");
    }

    /** A model named as in the ground-truth file: {@code models/kimi-k2.6} or {@code fixtures/qwen3}. */
    static Path configOf(String name) {
        if (name.startsWith("models/")) {
            return models().resolve(name.substring(7)).resolve("config.json");
        }
        if (name.startsWith("fixtures/")) {
            return fixtures().resolve(name.substring(9)).resolve("config.json");
        }
        throw new IllegalArgumentException("unknown model name " + name);
    }

    static ModelSpec spec(String name) {
        return ConfigLoader.load(configOf(name));
    }

    private static Path dir(String property) {
        String p = System.getProperty(property);
        if (p == null || !Files.isDirectory(Path.of(p))) {
            throw new IllegalStateException("system property " + property + " must name a folder, got " + p);
        }
        return Path.of(p);
    }
}
