package org.orbitrl.kernels.cuda.internal;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The machine code each kernel of a cubin holds: the sizes of its {@code .text.<kernel>} sections, read from the ELF64
 * section headers. A launch that runs its code once fetches it from the L2 (or DRAM) at roughly 80-180 cycles a KiB where
 * the SM does not hold it (CodeFetchProbe), so the size is a figure of a latency-bound kernel's cost.
 */
public final class CubinText {
    private static final int SHT_NOBITS = 8;

    private CubinText() {
    }

    /**
     * Kernel name to {@code .text} bytes, in section order; empty where {@code image} is not an ELF64 image (PTX text).
     *
     * @throws IllegalArgumentException where the image is an ELF64 file whose section headers or names lie past its end
     */
    public static Map<String, Integer> sizes(byte[] image) {
        Map<String, Integer> out = new LinkedHashMap<>();
        if (image.length < 64 || image[0] != 0x7f || image[1] != 'E' || image[2] != 'L' || image[3] != 'F' || image[4] != 2) {
            return out;
        }
        ByteBuffer b = ByteBuffer.wrap(image).order(image[5] == 2 ? ByteOrder.BIG_ENDIAN : ByteOrder.LITTLE_ENDIAN);
        long shoff = b.getLong(0x28);
        int shentsize = Short.toUnsignedInt(b.getShort(0x3A));
        int shnum = Short.toUnsignedInt(b.getShort(0x3C));
        int shstrndx = Short.toUnsignedInt(b.getShort(0x3E));
        if (shentsize < 64 || shoff < 0 || shoff + (long) shnum * shentsize > image.length || shstrndx >= shnum) {
            throw new IllegalArgumentException("cubin: " + shnum + " section headers of " + shentsize + " bytes at " + shoff
                    + " (names in header " + shstrndx + ") do not fit its " + image.length + " bytes");
        }
        long names = b.getLong((int) (shoff + (long) shstrndx * shentsize) + 0x18);
        long namesSize = b.getLong((int) (shoff + (long) shstrndx * shentsize) + 0x20);
        if (names < 0 || names + namesSize > image.length) {
            throw new IllegalArgumentException("cubin: its section names (" + namesSize + " bytes at " + names + ") lie past its "
                    + image.length + " bytes");
        }
        for (int i = 0; i < shnum; i++) {
            int h = (int) (shoff + (long) i * shentsize);
            long nameOff = Integer.toUnsignedLong(b.getInt(h));
            int type = b.getInt(h + 4);
            long size = b.getLong(h + 0x20);
            if (nameOff >= namesSize || type == SHT_NOBITS) {
                continue;
            }
            int start = (int) (names + nameOff);
            int end = start;
            while (end < names + namesSize && image[end] != 0) {
                end++;
            }
            String name = new String(image, start, end - start, StandardCharsets.US_ASCII);
            if (name.startsWith(".text.") && size >= 0 && size <= Integer.MAX_VALUE) {
                out.put(name.substring(6), (int) size);
            }
        }
        return out;
    }
}
