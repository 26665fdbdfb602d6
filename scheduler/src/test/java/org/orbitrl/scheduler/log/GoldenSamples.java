package org.orbitrl.scheduler.log;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * The fixed entries whose bytes are kept as golden files of the sample-log schema, one set per
 * released schema version, and the program that wrote them. A golden file is written once, when
 * its schema is released, and never rewritten: {@code SampleSchemaGoldenTest} holds every later
 * reader to it.
 *
 * <p>Run (only for a new schema version): {@code java ... org.orbitrl.scheduler.log.GoldenSamples
 * scheduler/src/test/resources/org/orbitrl/scheduler/log}
 */
public final class GoldenSamples {
    private GoldenSamples() {
    }

    /** Schema 1: a group of two samples, the second crossing a version switch. */
    static SampleGroup groupV1() {
        SampleRecord a = SampleRecord.builder()
                .job("quickstart-α")
                .promptId("addition/train/00042")
                .group(7, 0, 2)
                .promptTokens(151644, 872, 198, 17, 10, 18, 28)
                .response(new int[] {20, 151645}, new float[] {-0.125f, -2.5e-3f}, new boolean[] {true, true})
                .version(3)
                .reward(1.1, Map.of("correct", 1.0, "format", 0.1))
                .finishReason(FinishReason.STOP)
                .temperature(0.7f)
                .timings(new SampleTimings(1_767_225_600_000_000_000L, 1_767_225_600_250_000_000L, 12_345L))
                .build();
        SampleRecord b = SampleRecord.builder()
                .job("quickstart-α")
                .promptId("addition/train/00042")
                .group(7, 1, 2)
                .promptTokens(151644, 872, 198, 17, 10, 18, 28)
                .response(new int[] {19, 19, 19, 19, 19, 19, 19, 19, 19},
                        new float[] {-1f, -0.5f, -0.25f, -0f, -3.75f, -7f, -0.0625f, -10f, -1e-6f},
                        new boolean[] {true, true, false, true, true, true, true, true, false})
                .versions(List.of(new VersionSpan(0, 3), new VersionSpan(5, 4)))
                .reward(0.0, Map.of("correct", 0.0, "format", 0.0))
                .finishReason(FinishReason.LENGTH)
                .temperature(0.7f)
                .timings(new SampleTimings(1_767_225_600_000_000_000L, 1_767_225_601_000_000_000L, 99L))
                .build();
        return new SampleGroup(List.of(a, b));
    }

    /** Schema 1: an adapter-version event. */
    static AdapterVersionEvent adapterVersionV1() {
        return AdapterVersionEvent.of(4, 4, "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "adapters/v000004.safetensors", 1_048_576, 1_767_225_600_500_000_000L);
    }

    public static void main(String[] args) throws IOException {
        Path dir = Path.of(args[0]);
        Files.write(dir.resolve("group-v1.bin"), SampleCodec.encode(groupV1()));
        Files.write(dir.resolve("adapter-version-v1.bin"), SampleCodec.encode(adapterVersionV1()));
    }
}
