package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The kernel sources' headers ({@code #include "name.cuh"}) as {@link KernelLibrary} puts them in place; no GPU needed. */
class KernelSourceHeadersTest {
    @Test
    void headersArePutInPlaceWithLineMarkers() {
        String src = KernelLibrary.source("moe_decode");
        assertFalse(src.contains("#include"), "no include left for NVRTC");
        assertTrue(src.startsWith(KernelLibrary.resource("common.cuh")), "common.cuh first");
        int router = src.indexOf("#line 1 \"router.cuh\"");
        int group = src.indexOf("#line 1 \"qgemv_group.cuh\"");
        int kernel = src.indexOf("MD_KERNEL(int4");
        assertTrue(group > 0 && router > group && kernel > router, "both headers, in include order, before the kernels");
        assertTrue(src.contains("router_select_warp(float* lg"), "the router header's text");
        // after a header, the file's own line numbers resume at the line below the include
        String own = KernelLibrary.resource("moe_decode.cu");
        String[] lines = own.split("\n", -1);
        int includeLine = 0;
        for (int i = 0; i < lines.length; i++) {
            if (lines[i].startsWith("#include \"router.cuh\"")) {
                includeLine = i + 1;
            }
        }
        assertTrue(src.contains("#line " + (includeLine + 1) + " \"moe_decode.cu\"\n" + lines[includeLine]),
                "line marker after router.cuh names line " + (includeLine + 1));
        // the files that include the headers no longer define their helpers themselves, and compile as one text each
        assertEquals(1, count(KernelLibrary.source("moe"), "void router_select_warp("), "moe.cu: one definition");
        assertEquals(1, count(KernelLibrary.source("qgemv"), "void qg_fetch("), "qgemv.cu: one definition");
    }

    @Test
    void anIncludeOutsideTheKernelFolderIsRefusedByName() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> KernelLibrary.withHeaders("x.cu", "int a;\n#include <stdio.h>\n", 0));
        assertTrue(e.getMessage().contains("x.cu line 2") && e.getMessage().contains("stdio.h"), e.getMessage());
        IllegalStateException missing = assertThrows(IllegalStateException.class,
                () -> KernelLibrary.withHeaders("y.cu", "#include \"absent.cuh\"\n", 0));
        assertTrue(missing.getMessage().contains("absent.cuh"), missing.getMessage());
    }

    private static int count(String s, String what) {
        int n = 0;
        for (int i = s.indexOf(what); i >= 0; i = s.indexOf(what, i + 1)) {
            n++;
        }
        return n;
    }
}
