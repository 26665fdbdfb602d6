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
 * The one-row prologue products' switch ({@code orbit.cuda.gemvPrologue=on|plain|off}, plain by default), the launcher's
 * bound on a lane's steps against the kernel's own ({@code BGP_STEPS} in bgemv.cu), and the routed experts' down prologue
 * switch ({@code orbit.cuda.downPrologue=on|off}, on by default) and the router's ({@code orbit.cuda.routerPrologue=on|off},
 * on by default); q, k and v's build for one wave ({@code orbit.cuda.qkvWave=on|off}) and the attention's q made first
 * ({@code orbit.cuda.prepQFirst=on|off}), both on by default; the narrow add+norm ({@code orbit.cuda.narrowNorm}, on by
 * default) and the attention for groups of at most 8 ({@code orbit.cuda.prepGroup8}) and the gate/up launch with x staged
 * first ({@code orbit.cuda.swigluXFirst}), all three on by default; the group-8 attention's pages read first ({@code
 * orbit.cuda.prepPagesFirst}), the add+norm router's norm weights as bits ({@code orbit.cuda.routerNormBits}) and the
 * one-row product's x staged ({@code orbit.cuda.gemvStagedX}) and the few pairs' LoRA A with x staged by copies ({@code
 * orbit.cuda.pairsCopies}), all four off by default; and the MoE launches' triggers: no GPU needed.
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
        for (String bad : new String[]{"yes", "l2"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> valueWithProperty(key, bad, () -> CudaQgemv.prologueAsked(false)));
            assertTrue(e.getMessage().contains("orbit.cuda.gemvPrologue=" + bad) && e.getMessage().contains("on, plain or off"),
                    e.getMessage());
        }
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

    /** The few pairs' LoRA A products with x staged by asynchronous copies: off by default. */
    @Test
    void thePairsCopiesSwitch() {
        assertOnOff(CudaMoePairs.PAIRS_COPIES_PROPERTY, false, CudaMoePairs::pairsCopies, "copies");
    }

    /** The one-row prologue product's x staged in shared memory: off by default. */
    @Test
    void theStagedXSwitch() {
        assertOnOff(CudaQgemv.STAGED_X_PROPERTY, false, CudaQgemv::stagedXAsked, "yes");
    }

    /** The add+norm router's norm weights loaded as their bits: off by default. */
    @Test
    void theRouterNormBitsSwitch() {
        assertOnOff(CudaDecodeRouter.ROUTER_NORM_BITS_PROPERTY, false, CudaDecodeRouter::routerNormBits, "bits");
    }

    /** The group-8 attention's pages read in round one: off by default. */
    @Test
    void thePagesFirstSwitch() {
        assertOnOff(CudaFlashAttention.PREP_PAGES_FIRST_PROPERTY, false, CudaFlashAttention::prepPagesFirst, "first");
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
