package org.orbitrl.model.spec;

import java.nio.file.Files;
import java.nio.file.Path;

/** Where the shared model configs and fixtures are (system properties set by the build). */
final class ConfigPaths {
    private ConfigPaths() {
    }

    static Path models() {
        return existing("orbit.models", "../shared/models");
    }

    static Path fixtures() {
        return existing("orbit.fixtures", "../shared/fixtures").resolve("hf");
    }

    private static Path existing(String property, String fallback) {
        String p = System.getProperty(property);
        Path path = Path.of(p != null ? p : fallback).toAbsolutePath().normalize();
        if (!Files.isDirectory(path)) {
            throw new IllegalStateException(property + " points to " + path + ", which is not a directory");
        }
        return path;
    }
}
