package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.kernels.cuda.CudaTestBase.valueWithProperty;

/**
 * The one-row prologue products' switch ({@code orbit.cuda.gemvPrologue=on|plain|l2|off}, plain by default), the launcher's
 * bound on a lane's steps against the kernel's own ({@code BGP_STEPS} in bgemv.cu), and the routed experts' down prologue
 * switch ({@code orbit.cuda.downPrologue=on|off}, on by default) and the router's ({@code orbit.cuda.routerPrologue=on|off},
 * on by default); q, k and v's
 * build for one wave ({@code orbit.cuda.qkvWave=on|off}) and the attention's q made first ({@code orbit.cuda.prepQFirst=on|off}),
 * both on by default; the narrow add+norm ({@code orbit.cuda.narrowNorm}, on by default) and the attention for groups of
 * at most 8 ({@code orbit.cuda.prepGroup8}) and the gate/up launch with x staged first ({@code orbit.cuda.swigluXFirst}), all
 * three on by default; the staged q/k/v products' ({@code orbit.cuda.qkvStaged=off|bulk|copies}, off by default) and the
 * MoE launches' triggers: no GPU needed.
 */
class GemvPrologueSwitchTest {

    @Test
    void theSwitch() {
        String key = CudaQgemv.PROLOGUE_PROPERTY;
        assertTrue(valueWithProperty(key, null, () -> CudaQgemv.prologueAsked(false)), "plain by default: the plain product");
        assertFalse(valueWithProperty(key, null, () -> CudaQgemv.prologueAsked(true)), "plain by default: not the norm-folded one");
        assertFalse(valueWithProperty(key, "off", () -> CudaQgemv.prologueAsked(false)), "off: neither");
        assertTrue(valueWithProperty(key, "plain", () -> CudaQgemv.prologueAsked(false)), "plain: the plain product");
        assertFalse(valueWithProperty(key, "plain", () -> CudaQgemv.prologueAsked(true)), "plain: not the norm-folded one");
        assertTrue(valueWithProperty(key, "on", () -> CudaQgemv.prologueAsked(true)), "on: both");
        assertFalse(valueWithProperty(key, "on", CudaQgemv::l2PrologueAsked), "on: not the L2 prologue");
        assertTrue(valueWithProperty(key, "l2", () -> CudaQgemv.prologueAsked(false)), "l2: the plain product's");
        assertFalse(valueWithProperty(key, "l2", () -> CudaQgemv.prologueAsked(true)), "l2: not the norm-folded one's registers");
        assertTrue(valueWithProperty(key, "l2", CudaQgemv::l2PrologueAsked), "l2: the L2 prologue");
        assertFalse(valueWithProperty(key, null, CudaQgemv::l2PrologueAsked), "plain by default: not the L2 prologue");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> valueWithProperty(key, "yes", () -> CudaQgemv.prologueAsked(false)));
        assertTrue(e.getMessage().contains("orbit.cuda.gemvPrologue=yes"), e.getMessage());
    }

    @Test
    void theLaunchersStepBoundIsTheKernels() throws IOException {
        assertEquals(bgemvDefine("BGP_STEPS"), CudaQgemv.PROLOGUE_STEPS, "a lane's steps the kernel holds in registers");
    }

    /** The value of bgemv.cu's {@code #define name N}. */
    private static int bgemvDefine(String name) throws IOException {
        try (InputStream in = CudaQgemv.class.getResourceAsStream("/org/orbitrl/kernels/cuda/bgemv.cu")) {
            assertNotNull(in, "bgemv.cu on the class path");
            Matcher m = Pattern.compile("#define\\s+" + name + "\\s+(\\d+)").matcher(new String(in.readAllBytes(), StandardCharsets.UTF_8));
            assertTrue(m.find(), "bgemv.cu defines " + name);
            return Integer.parseInt(m.group(1));
        }
    }

    /**
     * The staged q/k/v products' switch ({@code orbit.cuda.qkvStaged=off|bulk|copies}, off by default) and shape: its row
     * blocks a block as a grid of at most one block an SM needs them, its shared memory, where it declines, and the
     * launcher's padding and bound the kernel's ({@code BGS_PAD}, {@code BGS_MAX_PER}).
     */
    @Test
    void theStagedQkvShape() throws IOException {
        int[] qwen = {4096, 512, 512};  // Qwen3-30B-A3B's q, k and v at K 2048: 640 row blocks of 8
        assertEquals(5, CudaQgemv.stagedRowBlocks(2048, qwen, 132), "640 row blocks on 132 SMs: 5 a block, 128 blocks");
        assertEquals(5L * 8 * (4096 + 32), CudaQgemv.stagedShared(2048, 5));
        assertEquals(0, CudaQgemv.stagedRowBlocks(4096, qwen, 132), "K 4096: 5 row blocks of 8 rows of 8 KiB do not fit");
        assertEquals(1, CudaQgemv.stagedRowBlocks(512, new int[]{70, 33, 9}, 132), "fewer row blocks than SMs: one a block");
        assertEquals(2, CudaQgemv.stagedRowBlocks(512, new int[]{1030, 100, 36}, 132), "147 row blocks on 132 SMs");
        assertEquals(0, CudaQgemv.stagedRowBlocks(256, new int[]{8 * 17 * 4, 0, 0}, 4), "17 row blocks a block: past the bound");
        assertEquals(0, CudaQgemv.stagedRowBlocks(2048, new int[]{0, 0, 0}, 132), "nothing to stage");
        assertEquals("off", valueWithProperty(CudaQgemv.STAGED_PROPERTY, null, CudaQgemv::staged));
        assertEquals("bulk", valueWithProperty(CudaQgemv.STAGED_PROPERTY, "bulk", CudaQgemv::staged));
        assertEquals("copies", valueWithProperty(CudaQgemv.STAGED_PROPERTY, " copies", CudaQgemv::staged));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> valueWithProperty(CudaQgemv.STAGED_PROPERTY, "on", CudaQgemv::staged));
        assertTrue(e.getMessage().contains("orbit.cuda.qkvStaged=on") && e.getMessage().contains("off, bulk or copies"), e.getMessage());
        assertEquals(bgemvDefine("BGS_PAD"), CudaQgemv.STAGED_PAD, "bytes after each staged row");
        assertEquals(bgemvDefine("BGS_MAX_PER"), CudaQgemv.STAGED_MAX_PER, "row blocks a block the kernel has barriers for");
    }


    @Test
    void theOneWaveAndQFirstSwitches() {
        String wave = CudaQgemv.WAVE_PROPERTY;
        assertTrue(valueWithProperty(wave, null, CudaQgemv::waveAsked), "one wave by default");
        assertFalse(valueWithProperty(wave, "off", CudaQgemv::waveAsked), "off: the four-blocks build");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> valueWithProperty(wave, "5", CudaQgemv::waveAsked));
        assertTrue(e.getMessage().contains("orbit.cuda.qkvWave=5"), e.getMessage());
        String first = CudaFlashAttention.PREP_Q_FIRST_PROPERTY;
        assertTrue(valueWithProperty(first, null, CudaFlashAttention::prepQFirst), "q first by default");
        assertFalse(valueWithProperty(first, "off", CudaFlashAttention::prepQFirst), "off: q after the first copies");
        e = assertThrows(IllegalArgumentException.class, () -> valueWithProperty(first, "early", CudaFlashAttention::prepQFirst));
        assertTrue(e.getMessage().contains("orbit.cuda.prepQFirst=early"), e.getMessage());
    }

    /** The narrow residual add and norm: on by default, off by its switch, anything else an error naming it. */
    @Test
    void theNarrowNormSwitch() {
        assertOnOff(CudaRowOps.NARROW_NORM_PROPERTY, true, CudaRowOps::narrowNorm, "yes");
    }

    @Test
    void theDownPrologueSwitch() {
        assertOnOff(CudaMoeDecodePairs.DOWN_PROLOGUE_PROPERTY, true, CudaMoeDecodePairs::downPrologue, "plain");
    }

    @Test
    void theRouterPrologueSwitch() {
        assertOnOff(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, true, CudaDecodeRouter::routerPrologue, "yes");
    }

    /** The attention for groups of at most 8: on by default. */
    @Test
    void theGroupOfEightSwitch() {
        assertOnOff(CudaFlashAttention.PREP_GROUP8_PROPERTY, true, CudaFlashAttention::prepGroup8, "8");
    }

    /** Where the loads-first attention lets the launch after it start: once its first copies are issued by default. */
    @Test
    void theAttentionTriggerSwitch() {
        assertEquals(1, valueWithProperty(CudaFlashAttention.TRIGGER_PROPERTY, null, CudaFlashAttention::attentionTrigger));
        assertEquals(0, valueWithProperty(CudaFlashAttention.TRIGGER_PROPERTY, "start", CudaFlashAttention::attentionTrigger));
        assertEquals(1, valueWithProperty(CudaFlashAttention.TRIGGER_PROPERTY, "copies", CudaFlashAttention::attentionTrigger));
        assertEquals(2, valueWithProperty(CudaFlashAttention.TRIGGER_PROPERTY, " tiles ", CudaFlashAttention::attentionTrigger));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> valueWithProperty(CudaFlashAttention.TRIGGER_PROPERTY, "exit", CudaFlashAttention::attentionTrigger));
        assertTrue(e.getMessage().contains("orbit.cuda.attentionTrigger=exit") && e.getMessage().contains("start, copies or tiles"), e.getMessage());
    }

    /** Where gate/up and down let the launch after them start: gate/up once its loads are issued, down at its wait, by default. */
    @Test
    void theMoeTriggerSwitches() {
        assertEquals(true, valueWithProperty(CudaMoeDecodePairs.GATE_UP_TRIGGER_PROPERTY, null, CudaMoeDecodePairs::gateUpTriggersLate));
        assertEquals(false, valueWithProperty(CudaMoeDecodePairs.GATE_UP_TRIGGER_PROPERTY, "wait", CudaMoeDecodePairs::gateUpTriggersLate));
        assertEquals(true, valueWithProperty(CudaMoeDecodePairs.GATE_UP_TRIGGER_PROPERTY, "loads", CudaMoeDecodePairs::gateUpTriggersLate));
        assertEquals("wait", valueWithProperty(CudaMoeDecodePairs.DOWN_TRIGGER_PROPERTY, null, CudaMoeDecodePairs::downTrigger));
        assertEquals("staged", valueWithProperty(CudaMoeDecodePairs.DOWN_TRIGGER_PROPERTY, " staged ", CudaMoeDecodePairs::downTrigger));
        assertEquals("early", valueWithProperty(CudaMoeDecodePairs.DOWN_TRIGGER_PROPERTY, "early", CudaMoeDecodePairs::downTrigger));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> valueWithProperty(CudaMoeDecodePairs.DOWN_TRIGGER_PROPERTY, "loads", CudaMoeDecodePairs::downTrigger));
        assertTrue(e.getMessage().contains("orbit.cuda.downTrigger=loads") && e.getMessage().contains("wait, staged or early"), e.getMessage());
    }

    /** The attention's loads issued by rounds: on by default. */
    @Test
    void theAttentionsLoadsFirstSwitch() {
        assertOnOff(CudaFlashAttention.PREP_LOADS_FIRST_PROPERTY, true, CudaFlashAttention::prepLoadsFirst, "rounds");
    }

    /** The gate/up launch with x staged first: on by default. */
    @Test
    void theGateUpXFirstSwitch() {
        assertOnOff(CudaMoeDecodePairs.X_FIRST_PROPERTY, true, CudaMoeDecodePairs::xFirst, "first");
    }

    /** Switch {@code key}: {@code byDefault} unset, true at {@code on}, false at {@code off}, {@code bad} an error naming it. */
    private static void assertOnOff(String key, boolean byDefault, java.util.function.BooleanSupplier asked, String bad) {
        assertEquals(byDefault, valueWithProperty(key, null, asked::getAsBoolean), key + ": " + (byDefault ? "on" : "off") + " by default");
        assertTrue(valueWithProperty(key, "on", asked::getAsBoolean), key + ": on");
        assertFalse(valueWithProperty(key, "off", asked::getAsBoolean), key + ": off");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> valueWithProperty(key, bad, asked::getAsBoolean));
        assertTrue(e.getMessage().contains(key + "=" + bad), e.getMessage());
    }
}
