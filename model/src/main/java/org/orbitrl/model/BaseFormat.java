package org.orbitrl.model;

import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;

import java.util.Arrays;

/**
 * How the bulk of a frozen base is held: as the checkpoint stores it ({@code bf16}), or quantized
 * on load into INT4 group-32 or an FP4 format. The bulk is the routed experts of an MoE model (as the
 * memory planner's presets count it); attention, norms, embeddings, the head and a dense model's MLP
 * projections stay as stored, so a dense qwen3 loads the same under every format.
 */
public enum BaseFormat {
    BF16("bf16", null),
    INT4("int4", "int4-g32"),
    MXFP4("mxfp4", "mxfp4"),
    NVFP4("nvfp4", "nvfp4");

    private final String cliName;
    private final String quantFormat;

    BaseFormat(String cliName, String quantFormat) {
        this.cliName = cliName;
        this.quantFormat = quantFormat;
    }

    public String cliName() {
        return cliName;
    }

    /** The quant format experts are converted to, or null to keep them as stored. */
    public QuantFormat quantFormat() {
        return quantFormat == null ? null : QuantFormats.byName(quantFormat);
    }

    public static BaseFormat parse(String s) {
        for (BaseFormat f : values()) {
            if (f.cliName.equalsIgnoreCase(s)) {
                return f;
            }
        }
        throw new IllegalArgumentException("base format '" + s + "' is not one of "
                + Arrays.stream(values()).map(BaseFormat::cliName).toList());
    }
}
