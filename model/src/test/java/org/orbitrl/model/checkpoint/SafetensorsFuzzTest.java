package org.orbitrl.model.checkpoint;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.DType;

/**
 * Damaged safetensors files, made by seeded edits of a valid one's header and length field: each either opens and
 * reads every tensor it lists, or is refused with a {@link CheckpointException} that names the file. No other
 * exception escapes (an index out of bounds, a negative allocation, an out-of-memory).
 */
class SafetensorsFuzzTest {
    @TempDir
    Path tmp;

    /** Edits of the header's text: digits, punctuation, keys and dtypes that a damaged file could hold. */
    private static final String[] PIECES = {
        "0", "1", "9", "-1", "99999999999999999999", "1e3", "\"", "{", "}", "[", "]", ",", ":", "null", "true",
        "\"F32\"", "\"BF16\"", "\"I64\"", "\"F8_E4M3\"", "\"XX\"", "\"shape\"", "\"dtype\"", "\"data_offsets\"",
        "\"__metadata__\"", "[0,0]", "[64,0]", "[0,99999]", "[4,4,4]", "[]", "\\u0000", " ",
    };

    @Test
    void everyDamagedFileOpensWhollyOrNamesItself() throws IOException {
        Random rnd = new Random(20261204);
        Path valid = tmp.resolve("valid.safetensors");
        new SafetensorsWriter().add("a.weight", Fixtures.random(rnd, DType.F32, 4, 4))
                .add("b.weight", Fixtures.random(rnd, DType.BF16, 2, 8)).add("c.bias", Fixtures.random(rnd, DType.F32, 3))
                .write(valid);
        byte[] bytes = Files.readAllBytes(valid);
        long headerLen = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(bytes, 8, (int) headerLen, StandardCharsets.UTF_8);
        byte[] data = java.util.Arrays.copyOfRange(bytes, 8 + (int) headerLen, bytes.length);
        int opened = 0;
        int refused = 0;
        for (int trial = 0; trial < 2000; trial++) {
            String h = header;
            int edits = 1 + rnd.nextInt(3);
            for (int e = 0; e < edits; e++) {
                int at = rnd.nextInt(h.length() + 1);
                int cut = Math.min(h.length() - at, rnd.nextInt(4));
                h = h.substring(0, at) + (rnd.nextInt(3) == 0 ? "" : PIECES[rnd.nextInt(PIECES.length)]) + h.substring(at + cut);
            }
            byte[] hb = h.getBytes(StandardCharsets.UTF_8);
            long declared = switch (rnd.nextInt(8)) {   // the length field, mostly right
                case 0 -> hb.length + 1 + rnd.nextInt(64);
                case 1 -> Math.max(0, hb.length - 1 - rnd.nextInt(8));
                case 2 -> rnd.nextLong();
                default -> hb.length;
            };
            int keep = rnd.nextInt(6) == 0 ? rnd.nextInt(data.length + 1) : data.length;   // sometimes truncated
            ByteBuffer b = ByteBuffer.allocate(8 + hb.length + keep).order(ByteOrder.LITTLE_ENDIAN);
            b.putLong(declared).put(hb).put(data, 0, keep);
            Path f = tmp.resolve("edit-" + trial + ".safetensors");
            Files.write(f, b.array());
            try (SafetensorsFile s = SafetensorsFile.open(f)) {
                for (String name : s.tensors().keySet()) {
                    s.tensor(name).toFloatArray();   // every listed tensor reads
                }
                opened++;
            } catch (CheckpointException e) {
                assertTrue(e.getMessage().contains(f.toString()), "names the file: " + e.getMessage());
                refused++;
            } catch (RuntimeException | OutOfMemoryError e) {
                fail("edit " + trial + " threw " + e + " instead of a CheckpointException; header (length field "
                        + declared + "):\n" + h, e);
            }
            Files.delete(f);
        }
        assertTrue(opened >= 20 && refused >= 1000, "opened " + opened + ", refused " + refused);
    }
}
