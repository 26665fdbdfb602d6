package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The kernel timeline's build switch ({@code -Dorbit.cuda.trace}) and its one rule for the sources: every kernel's first
 * statement is {@code ORBIT_TRACE_KERNEL()}, so that a traced build records every launch. No GPU needed.
 */
class KernelTraceSourceTest {
    private static final Pattern GLOBAL = Pattern.compile("__global__");

    @Test
    void onDefinesTheTraceAheadOfTheSourceAndOffLeavesItAsBefore() {
        assertTrue(KernelLibrary.traced("on"));
        assertFalse(KernelLibrary.traced("off"));
        assertFalse(KernelLibrary.traced(null));
        assertFalse(KernelLibrary.traced(""));
        String plain = KernelLibrary.source("norm", false);
        assertEquals(plain, KernelLibrary.source("norm", false, false));
        String traced = KernelLibrary.source("norm", false, true);
        assertTrue(traced.startsWith("#define ORBIT_TRACE 1\n") && traced.endsWith(plain), "the define, then the same text");
        String both = KernelLibrary.source("norm", true, true);
        assertTrue(both.startsWith("#define ORBIT_TRACE 1\n#define ORBIT_PDL_TRIGGER_AT_EXIT 1\n"), "both switches");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.traced("yes"));
        assertTrue(e.getMessage().contains("orbit.cuda.trace") && e.getMessage().contains("on or off"), e.getMessage());
    }

    /**
     * {@code -Dorbit.cuda.routerRegs}: on or unset defines {@code ORBIT_ROUTER_REGS} ahead of the rest, off leaves the
     * text as it is; router.cuh's {@code router_select_warp} takes the registers' form only under the define, and every
     * router's source selects through it.
     */
    @Test
    void theRoutersSelectionInRegistersIsOneDefineAheadOfTheSource() {
        assertTrue(KernelLibrary.routerRegs(null));
        assertTrue(KernelLibrary.routerRegs(""));
        assertFalse(KernelLibrary.routerRegs("off"));
        assertTrue(KernelLibrary.routerRegs("on"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.routerRegs("regs"));
        assertTrue(e.getMessage().contains("orbit.cuda.routerRegs=regs") && e.getMessage().contains("on or off"), e.getMessage());
        String plain = KernelLibrary.source("moe", false, false, true);
        assertEquals(plain, KernelLibrary.source("moe", false, false, true, false));
        String regs = KernelLibrary.source("moe", false, false, true, true);
        assertTrue(regs.startsWith("#define ORBIT_ROUTER_REGS 1\n") && regs.endsWith(plain), "the define, then the same text");
        String router = KernelLibrary.resource("router.cuh");
        int select = router.indexOf("void router_select_warp(");
        int guard = router.indexOf("#if defined(ORBIT_ROUTER_REGS) && __CUDA_ARCH__ >= 800", select);
        int end = router.indexOf("#endif", guard);
        assertTrue(select > 0 && guard > select && end > guard, "router_select_warp's guarded registers form");
        assertTrue(router.substring(guard, end).contains("router_select_regs<4>(") && router.substring(end).contains("router_select_scan("),
                "the registers under the define, the rescans past it");
        for (String file : new String[]{"moe", "moe_decode", "decode_layer"}) {
            assertTrue(KernelLibrary.source(file, false, false).contains("router_select_warp("), file + " selects through router_select_warp");
        }
    }

    /**
     * {@code -Dorbit.cuda.l2Stream}: on or unset defines {@code ORBIT_L2_STREAM} ahead of the rest, off leaves the text as
     * before; common.cuh's {@code ld_stream} is the evict-first load under the define and the plain load without it, and the
     * products' weight loads go through it.
     */
    @Test
    void theWeightStreamsPolicyIsOneDefineAheadOfTheSource() {
        assertTrue(KernelLibrary.streamed(null));
        assertTrue(KernelLibrary.streamed(""));
        assertTrue(KernelLibrary.streamed("on"));
        assertFalse(KernelLibrary.streamed("off"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KernelLibrary.streamed("first"));
        assertTrue(e.getMessage().contains("orbit.cuda.l2Stream") && e.getMessage().contains("on or off"), e.getMessage());
        String plain = KernelLibrary.source("bgemv", false, false);
        assertEquals(plain, KernelLibrary.source("bgemv", false, false, false));
        String streamed = KernelLibrary.source("bgemv", false, false, true);
        assertTrue(streamed.startsWith("#define ORBIT_L2_STREAM 1\n") && streamed.endsWith(plain), "the define, then the same text");
        String common = KernelLibrary.resource("common.cuh");
        int define = common.indexOf("#ifdef ORBIT_L2_STREAM");
        int other = common.indexOf("#else", define);
        assertTrue(define > 0 && other > define, "common.cuh's two forms of ld_stream");
        assertTrue(common.substring(define, other).contains("createpolicy.fractional.L2::evict_first"), "evict-first under the define");
        assertTrue(common.substring(other, common.indexOf("#endif", other)).contains("uint4 ld_stream(const uint4* a) { return *a; }"),
                "the plain load without it");
        assertTrue(plain.contains("ld_stream(w + grow[r] * G + g + u * S)") && plain.contains("ld_stream(w + grow * G + g0 + u * S)"),
                "bgemv's weight loads");
        String experts = KernelLibrary.source("qgemv", false, false);
        assertTrue(experts.contains("ld_stream(codes + grow[r] * G + g + u * S)") && experts.contains("ld_stream((const u16*) scales"),
                "the quantized experts' codes and scales");
    }

    @Test
    void commonHeadersLayoutIsTheOneTheHostReads() {
        String common = KernelLibrary.resource("common.cuh");
        assertTrue(common.contains("#define ORBIT_TRACE_HEAD " + KernelLibrary.TRACE_HEAD + "\n"), "the head's words");
        assertTrue(common.contains("#define ORBIT_TRACE_WORDS " + KernelLibrary.TRACE_WORDS + "\n"), "a record's words");
        assertTrue(common.contains("#define ORBIT_TRACE_RECORDS " + KernelLibrary.TRACE_RECORDS + "\n"), "records a module holds");
        assertTrue(common.contains("#define ORBIT_TRACE_MARKS " + KernelLibrary.TRACE_MARKS + " "), "a kernel's own marks");
        assertEquals(KernelLibrary.TRACE_WORDS, 10 + KernelLibrary.TRACE_MARKS, "the marks are a record's last words");
        assertTrue(common.contains("#define ORBIT_TRACE_KERNEL() ((void) 0)"), "nothing in a plain build");
    }

    @Test
    void everyKernelBeginsWithItsTraceRecord() {
        List<String> missing = new ArrayList<>();
        int kernels = 0;
        for (String file : KernelSourcesCompileTest.sourceFiles()) {
            String text = KernelLibrary.resource(file);
            Matcher m = GLOBAL.matcher(text);
            while (m.find()) {
                int lineStart = text.lastIndexOf('\n', m.start()) + 1;
                if (text.substring(lineStart, m.start()).contains("//")) {
                    continue; // a comment's word
                }
                int body = bodyStart(text, m.end());
                if (body < 0) {
                    continue; // a declaration
                }
                kernels++;
                String after = text.substring(body + 1).replace("\\\n", "\n").stripLeading();
                if (!after.startsWith("ORBIT_TRACE_KERNEL();")) {
                    int line = (int) text.substring(0, m.start()).chars().filter(c -> c == '\n').count() + 1;
                    missing.add(file + ":" + line);
                }
            }
        }
        assertTrue(kernels > 200, "kernels found: " + kernels);
        assertEquals(List.of(), missing, "kernels whose first statement is not ORBIT_TRACE_KERNEL()");
    }

    /** The index of the kernel's opening brace (the first at parenthesis depth 0 after {@code from}); -1 where a ';' comes first. */
    private static int bodyStart(String text, int from) {
        int depth = 0;
        for (int i = from; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == '(') {
                depth++;
            } else if (c == ')') {
                depth--;
            } else if (depth == 0 && c == ';') {
                return -1;
            } else if (depth == 0 && c == '{') {
                return i;
            }
        }
        return -1;
    }
}
