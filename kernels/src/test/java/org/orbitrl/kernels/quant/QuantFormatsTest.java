package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class QuantFormatsTest {

    private static final List<String> NAMES =
            List.of("int4-g32", "int4-g32-asym", "mxfp4", "nvfp4", "fp8-block128", "fp8-block128-ue8m0");

    @Test
    void everyFormatIsFoundByItsName() {
        assertEquals(NAMES, QuantFormats.names());
        for (String n : NAMES) {
            assertEquals(n, QuantFormats.byName(n).name());
        }
        assertSame(Int4G32.INSTANCE, QuantFormats.byName("int4-g32"));
    }

    @Test
    void unknownNameListsTheKnownOnes() {
        var e = assertThrows(IllegalArgumentException.class, () -> QuantFormats.byName("int3-g64"));
        assertTrue(e.getMessage().contains("int3-g64"), e.getMessage());
        for (String n : NAMES) {
            assertTrue(e.getMessage().contains(n), e.getMessage());
        }
    }

    @Test
    void descriptorsStateTheLayouts() {
        // name, bits, block rows x cols, bytes per block row, code dtype, scale dtype
        Object[][] want = {
                {"int4-g32", 4, 1, 32, 16, DType.I32, DType.BF16},
                {"int4-g32-asym", 4, 1, 32, 16, DType.I32, DType.BF16},
                {"mxfp4", 4, 1, 32, 16, DType.U8, DType.U8},
                {"nvfp4", 4, 1, 16, 8, DType.U8, DType.F8E4M3},
                {"fp8-block128", 8, 128, 128, 128, DType.F8E4M3, DType.F32},
                {"fp8-block128-ue8m0", 8, 128, 128, 128, DType.F8E4M3, DType.U8}};
        for (Object[] w : want) {
            QuantDescriptor d = QuantFormats.byName((String) w[0]).descriptor();
            assertEquals(List.of(w), List.of(d.name(), d.bitsPerValue(), d.blockRows(), d.blockCols(), d.bytesPerBlock(),
                    d.codeType(), d.scaleType()), d.toString());
        }
        assertEquals(-6f, Mxfp4.INSTANCE.descriptor().codeTable()[15]);
        assertEquals(448f, Fp8Block128.INSTANCE.descriptor().codeTable()[0x7E]);
        assertTrue(Int4G32Asym.INSTANCE.descriptor().zeroPoints() && Nvfp4.INSTANCE.descriptor().globalScale());
    }

    @Test
    void inconsistentDescriptorFailsItsCheck() {
        var e = assertThrows(IllegalStateException.class, () -> new QuantDescriptor("bad", 4, 1, 32, 8, DType.U8,
                QuantDescriptor.ScaleEncoding.E8M0, "", QuantDescriptor.NibbleOrder.LOW_FIRST, new float[16], false, false)
                .check());
        assertTrue(e.getMessage().contains("bad") && e.getMessage().contains("bytesPerBlock"), e.getMessage());
        var table = assertThrows(IllegalStateException.class, () -> new QuantDescriptor("bad2", 8, 128, 128, 128,
                DType.F8E4M3, QuantDescriptor.ScaleEncoding.F32, "", QuantDescriptor.NibbleOrder.NONE, new float[16],
                false, false).check());
        assertTrue(table.getMessage().contains("codeTable"), table.getMessage());
    }

    @Test
    void quantizedSizesMatchStorageBytesForEveryFormat() {
        for (QuantFormat f : QuantFormats.all()) {
            QuantizedTensor w = f.quantize(QuantTesting.gaussian(61, 7, 128));
            long extra = f.descriptor().globalScale() ? 4 : 0;
            assertEquals(f.storageBytes(7, 128), w.byteSize() + extra, f.name());
            assertEquals(f.packedBytesPerRow(128) * 7, w.codes().byteSize(), f.name());
        }
    }
}
