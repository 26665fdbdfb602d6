package org.orbitrl.memory.plan;

import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A GPU node: how many GPUs and how much memory each has. The presets hold the total memory the
 * driver reports for each GPU ({@code nvidia-smi}'s {@code memory.total}); the CUDA context and
 * other runtime overheads are planned in {@link org.orbitrl.kernels.MemoryCategory#RUNTIME_RESERVE}.
 *
 * @param name        {@code 8xB200}, or the custom string it was parsed from
 * @param gpus        GPUs in the node
 * @param bytesPerGpu memory of one GPU in bytes
 */
public record NodeSpec(String name, int gpus, long bytesPerGpu) {

    private static final long MIB = 1L << 20;
    /** B200 (192 GB HBM3e): 183,359 MiB reported. */
    static final long B200 = 183_359 * MIB;
    /** H200 (141 GB HBM3e): 143,771 MiB reported. */
    static final long H200 = 143_771 * MIB;
    /** H100 SXM (80 GB HBM3): 81,559 MiB reported. */
    static final long H100 = 81_559 * MIB;

    /** The preset names, as {@link #parse} accepts them. */
    public static final List<String> PRESETS = List.of("8xB200", "8xH200", "1xH200", "8xH100", "1xH100");

    private static final Pattern PRESET = Pattern.compile("(\\d+)x(b200|h200|h100)");
    private static final Pattern CUSTOM = Pattern.compile("(\\d+)x(\\d+(?:\\.\\d+)?)(gb|gib)?");

    public NodeSpec {
        if (gpus <= 0 || gpus > 1024) {
            throw new IllegalArgumentException("a node has 1 to 1024 GPUs, not " + gpus);
        }
        if (bytesPerGpu < (1L << 30)) {
            throw new IllegalArgumentException("GPU memory of " + bytesPerGpu + " bytes is less than 1 GiB");
        }
    }

    /** The name under which the host's own memory stands in for one GPU (the CPU backend). */
    public static final String HOST = "cpu";

    /** True when this "node" is the host's memory (the CPU backend), whose tensors the host reads directly. */
    public boolean hostMemory() {
        return HOST.equals(name);
    }

    /** Memory of the whole node. */
    public long totalBytes() {
        return gpus * bytesPerGpu;
    }

    /**
     * A preset ({@code 8xB200}, {@code 8xH200}, {@code 1xH200}, {@code 8xH100}; any count of these
     * GPUs works) or a custom {@code NxSIZE}: {@code 8x96GB} (10^9 bytes) or {@code 4x80GiB} (2^30).
     */
    public static NodeSpec parse(String s) {
        String k = s.trim().toLowerCase(Locale.ROOT);
        Matcher p = PRESET.matcher(k);
        if (p.matches()) {
            long mem = switch (p.group(2)) {
                case "b200" -> B200;
                case "h200" -> H200;
                default -> H100;
            };
            return new NodeSpec(p.group(1) + "x" + p.group(2).toUpperCase(Locale.ROOT), gpus(s, p.group(1)), mem);
        }
        Matcher c = CUSTOM.matcher(k);
        if (c.matches()) {
            double size = Double.parseDouble(c.group(2));
            long unit = "gib".equals(c.group(3)) ? 1L << 30 : 1_000_000_000L;
            if (!(size > 0) || size > 1e6) {
                throw new IllegalArgumentException("node '" + s + "': GPU memory " + c.group(2) + " is out of range");
            }
            return new NodeSpec(s.trim(), gpus(s, c.group(1)), (long) (size * unit));
        }
        throw new IllegalArgumentException("unknown node '" + s + "'; expected a preset (" + String.join(", ", PRESETS)
                + ", any GPU count) or NxSIZE such as 8x96GB or 4x80GiB");
    }

    private static int gpus(String s, String n) {
        try {
            return Integer.parseInt(n);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("node '" + s + "': GPU count " + n + " is not a number");
        }
    }

    @Override
    public String toString() {
        return name + " (" + gpus + " x " + Bytes.format(bytesPerGpu) + ")";
    }
}
