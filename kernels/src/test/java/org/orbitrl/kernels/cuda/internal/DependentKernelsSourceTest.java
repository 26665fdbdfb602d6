package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.FileSystem;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The kernels launched as programmatic dependents ({@link DependentKernels}) against the CUDA
 * sources: each one's body (written out, or in the {@code #define} that stamps it out) starts with
 * {@code pdl_enter();} (or {@code pdl_enter_early();}, {@code pdl_enter_late();}) before anything else, {@code pdl_enter} is called nowhere else, and every
 * written-out kernel that starts with it is listed (no kernel waits for a launch that never comes
 * as a dependent one). A listed kernel that read global memory before the wait would race with
 * its predecessor on the GPU; this finds it without one.
 */
class DependentKernelsSourceTest {
    private static final Pattern GLOBAL = Pattern.compile("__global__");
    private static final Pattern LAUNCH_BOUNDS = Pattern.compile("__launch_bounds__\\s*\\([^)]*\\)");
    private static final Pattern DEFINE = Pattern.compile("#define\\s+\\w+\\(([^)]*)\\)");
    private static final Pattern POINTER_PARAM = Pattern.compile("\\*\\s*(?:__restrict__\\s*)?(\\w+)\\s*[,)]");
    private static final Pattern WAIT_CALL = Pattern.compile("\\bpdl_enter(?:_early|_late)?\\s*\\(");

    /** A {@code __global__} definition: its name (a pattern when a macro pastes it together) and whether it starts with the wait. */
    private record Definition(String file, String nameExpr, Pattern name, boolean literal, boolean waits, List<String> params,
                              String preWait, List<String> pointers) {
        /** Characters of the name that are not macro parameters. */
        int literalChars() {
            int n = 0;
            for (String part : nameExpr.split("##")) {
                n += params != null && params.contains(part.trim()) ? 0 : part.trim().length();
            }
            return n;
        }
    }

    @Test
    void everyListedKernelWaitsFirst() throws IOException {
        Set<String> listed = DependentKernels.all();
        assertTrue(listed.size() > 40, "the decode step's kernels are listed: " + listed.size());
        List<String> problems = new ArrayList<>();
        for (String entry : listed.stream().sorted().toList()) {
            String file = entry.substring(0, entry.indexOf('/'));
            String name = entry.substring(entry.indexOf('/') + 1);
            List<Definition> defs = definitions(file, KernelLibrary.resource(file + ".cu"));
            List<Definition> exact = defs.stream().filter(d -> d.literal && d.nameExpr.equals(name)).toList();
            List<Definition> stamped = defs.stream().filter(d -> !d.literal && d.name.matcher(name).matches()).toList();
            int specific = stamped.stream().mapToInt(Definition::literalChars).max().orElse(0);
            List<Definition> matching = !exact.isEmpty() ? exact
                    : stamped.stream().filter(d -> d.literalChars() == specific).toList(); // the most specific macros
            if (matching.isEmpty()) {
                problems.add(entry + ": no definition in " + file + ".cu");
            }
            Set<String> frozen = DependentKernels.prologues().get(entry);
            for (Definition d : matching) {
                if (frozen != null) {
                    prologueProblems(entry, d, frozen, problems);
                } else if (!d.waits) {
                    problems.add(entry + ": the body of " + d.nameExpr + " in " + file + ".cu does not start with pdl_enter();");
                }
            }
        }
        if (!problems.isEmpty()) {
            fail(problems.size() + " listed kernels are unsafe to launch as dependents:\n  " + String.join("\n  ", problems));
        }
    }

    /**
     * The one prologue parameter that is not a frozen weight, the down prologue's expert ids ({@link DependentKernels}'s
     * stated exception), is read before the wait by {@code qgd_begin} alone, and past L1 ({@code __ldcg}): an L1 line
     * of an earlier layer's ids must not answer it.
     */
    @Test
    void theDownProloguesIdsAreReadPastL1() {
        assertEquals(Set.of("ids", "codes", "scales", "zeros"), DependentKernels.prologues().get("qgemv/qgemv_down_combine_pre_int4"));
        String src = stripComments(KernelLibrary.resource("qgemv.cu"));
        int begin = src.indexOf("void qgd_begin(");
        assertTrue(begin >= 0, "qgemv.cu defines qgd_begin");
        String body = src.substring(begin, src.indexOf("\n}\n", begin));
        assertTrue(body.contains("__ldcg(ids + pair)"), "qgd_begin reads the ids with __ldcg:\n" + body);
        assertEquals(1, Pattern.compile("\\bids\\b").matcher(body.substring(body.indexOf('{'))).results().count(),
                "qgd_begin reads ids once, past L1:\n" + body);
        // the form that chooses the experts from the router's logits reads them once before its wait, past L1 too
        assertEquals(Set.of("logits", "codes", "scales", "zeros"), DependentKernels.prologues().get("qgemv/qgemv_down_combine_pre_pk_int4"));
        int pk = src.indexOf("qgemv_down_combine_pre_pk_int4(");
        assertTrue(pk >= 0, "qgemv.cu defines qgemv_down_combine_pre_pk_int4");
        String pre = src.substring(src.indexOf('{', pk), src.indexOf("pdl_enter();", pk));
        assertTrue(pre.contains("__ldcg(logits + "), "the pick's prologue reads the logits with __ldcg:\n" + pre);
        assertEquals(1, Pattern.compile("\\blogits\\b").matcher(pre).results().count(), "the logits read once, past L1:\n" + pre);
    }

    @Test
    void waitIsOnlyFirstAndOnlyInListedKernels() throws IOException, URISyntaxException {
        URL common = KernelLibrary.class.getResource("/org/orbitrl/kernels/cuda/common.cuh");
        assertNotNull(common, "common.cuh on the class path");
        URI uri = common.toURI();
        List<String> files;
        // the sources are a folder of classes when built here and entries of the kernels jar on a GPU machine
        try (FileSystem jar = "jar".equals(uri.getScheme()) ? FileSystems.newFileSystem(uri, Map.of()) : null;
             Stream<Path> s = Files.list(Path.of(uri).getParent())) {
            files = s.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".cu")).sorted().toList();
        }
        assertTrue(files.size() > 10, "kernel sources found beside " + uri + ": " + files);
        assertTrue(KernelLibrary.resource("common.cuh").contains("griddepcontrol.wait"), "common.cuh defines the wait");
        Set<String> listed = DependentKernels.all();
        List<String> problems = new ArrayList<>();
        int waiting = 0;
        for (String f : files) {
            String file = f.substring(0, f.length() - 3);
            String src = KernelLibrary.resource(f);
            List<Definition> defs = definitions(file, src);
            long firsts = defs.stream().filter(Definition::waits).count();
            long prologues = defs.stream().filter(d -> d.literal && DependentKernels.prologues().containsKey(file + "/" + d.nameExpr)).count();
            long calls = WAIT_CALL.matcher(stripComments(src)).results().count();
            if (calls != firsts + prologues) {
                problems.add(f + ": pdl_enter() called " + calls + " times, " + firsts + " of them as a kernel's first statement, "
                        + prologues + " after a listed prologue");
            }
            for (Definition d : defs) {
                if (d.literal && d.waits && !listed.contains(file + "/" + d.nameExpr)) {
                    problems.add(file + "/" + d.nameExpr + " waits for its predecessor but is not listed in DependentKernels");
                }
            }
            waiting += (int) firsts;
        }
        if (!problems.isEmpty()) {
            fail(String.join("\n", problems));
        }
        assertTrue(waiting >= 16, "kernels (and kernel macros) that start with pdl_enter(): " + waiting);
    }

    @Test
    void parserSeesWhatItIsMeantTo() {
        String src = """
                extern "C" __global__ void a_f32(const float* x) {
                    pdl_enter();
                    x[0];
                }
                extern "C" __global__ void __launch_bounds__(64) b_f32(const float* x) {
                    extern __shared__ float sm[];
                    pdl_enter();
                }
                #define K(NAME, MT)                                     \\
                    extern "C" __global__ void __launch_bounds__(32, 2) \\
                        NAME##_m##MT(const float* x) {                  \\
                        /* waits */ pdl_enter();                        \\
                        body<MT>(x);                                    \\
                    }
                K(c, 8)
                #define J(MT) extern "C" __global__ void j_m##MT(const float* x) { body<MT>(x); }
                J(8)
                """;
        List<Definition> defs = definitions("t", src);
        assertEquals(List.of("a_f32", "b_f32", "NAME##_m##MT", "j_m##MT"), defs.stream().map(Definition::nameExpr).toList());
        assertEquals(List.of(true, false, true, false), defs.stream().map(Definition::waits).toList());
        assertEquals(List.of(5, 5, 2, 3), defs.stream().map(Definition::literalChars).toList());
        assertTrue(defs.get(3).name.matcher("j_m8").matches(), defs.get(3).name.pattern());
        assertTrue(defs.get(2).name.matcher("c_m8").matches(), defs.get(2).name.pattern());
        assertFalse(defs.get(2).name.matcher("c_x8").matches(), defs.get(2).name.pattern());
        assertFalse(defs.get(2).literal);
    }

    /**
     * A prologue kernel ({@link DependentKernels#prologues}) waits once, and before that names none of its pointer
     * parameters but the frozen ones it may read there (a name after {@code .} or {@code ->} is a member, not one).
     */
    private static void prologueProblems(String entry, Definition d, Set<String> frozen, List<String> problems) {
        if (d.preWait == null) {
            problems.add(entry + ": a prologue kernel without pdl_enter(); in its body");
            return;
        }
        if (d.pointers.isEmpty() || !d.pointers.containsAll(frozen)) {
            problems.add(entry + ": its pointer parameters " + d.pointers + " do not include the frozen " + frozen);
        }
        for (String p : d.pointers) {
            if (!frozen.contains(p) && Pattern.compile("(?<![.\\w>])" + Pattern.quote(p) + "\\b").matcher(d.preWait).find()) {
                problems.add(entry + ": reads " + p + " before pdl_enter(); (only " + frozen + " may be read there)");
            }
        }
    }

    @Test
    void aPrologueKernelNamesOnlyItsFrozenWeightsBeforeTheWait() {
        String src = """
                extern "C" __global__ void __launch_bounds__(256, 2) p_f32(const float* x, const uint4* __restrict__ w, float* y, int n) {
                    uint4 q = w[threadIdx.x];
                    pdl_enter();
                    y[0] = x[0] + q.x;
                }
                extern "C" __global__ void r_f32(const float* x, const uint4* w, float* y) {
                    float a = x[1];
                    uint4 q = w[0];
                    pdl_enter();
                    y[0] = a;
                }
                """;
        List<Definition> defs = definitions("t", src);
        assertEquals(List.of("x", "w", "y"), defs.get(0).pointers());
        List<String> problems = new ArrayList<>();
        prologueProblems("t/p_f32", defs.get(0), Set.of("w"), problems);
        assertEquals(List.of(), problems);
        prologueProblems("t/r_f32", defs.get(1), Set.of("w"), problems);
        assertEquals(List.of("t/r_f32: reads x before pdl_enter(); (only [w] may be read there)"), problems);
        assertFalse(defs.get(0).waits(), "a prologue kernel does not start with the wait");
    }

    /** The kernel timeline's record, every kernel's first statement (common.cuh; empty unless built with ORBIT_TRACE). */
    private static final String TRACE = "ORBIT_TRACE_KERNEL();";

    /** Every {@code __global__} definition of {@code src}. */
    private static List<Definition> definitions(String file, String src) {
        List<Definition> out = new ArrayList<>();
        Matcher m = GLOBAL.matcher(src);
        while (m.find()) {
            int open = src.indexOf('{', m.end());
            if (open < 0) {
                break;
            }
            String head = LAUNCH_BOUNDS.matcher(src.substring(m.end(), open)).replaceAll(" ");
            String beforeParams = head.substring(0, head.indexOf('(')).trim();
            String[] words = beforeParams.split("[\\s\\\\]+");
            String nameExpr = words[words.length - 1];
            String body = stripComments(src.substring(open + 1, Math.min(src.length(), open + 400))).replace("\\", " ").strip();
            if (body.startsWith(TRACE)) {
                body = body.substring(TRACE.length()).strip(); // the timeline's record: in a traced build it touches its own buffer alone
            }
            boolean waits = body.startsWith("pdl_enter();") || body.startsWith("pdl_enter_early();") || body.startsWith("pdl_enter_late();");
            String whole = stripComments(src.substring(open + 1, Math.min(src.length(), open + 6000))).replace("\\", " ");
            Matcher waitCall = WAIT_CALL.matcher(whole);
            int wait = waitCall.find() ? waitCall.start() : -1;
            String preWait = wait < 0 ? null : whole.substring(0, wait);
            List<String> pointers = POINTER_PARAM.matcher(head.substring(head.indexOf('(') + 1)).results().map(r -> r.group(1)).toList();
            List<String> params = macroParams(src, m.start());
            Pattern name;
            if (params == null) {
                name = Pattern.compile(Pattern.quote(nameExpr));
            } else {
                name = Pattern.compile(Arrays.stream(nameExpr.split("##"))
                        .map(p -> params.contains(p.trim()) ? "\\w+" : Pattern.quote(p.trim()))
                        .collect(Collectors.joining()));
            }
            out.add(new Definition(file, nameExpr, name, params == null, waits, params, preWait, pointers));
        }
        return out;
    }

    /** The parameters of the {@code #define} the position lies in (its lines joined by backslashes), or null outside one. */
    private static List<String> macroParams(String src, int pos) {
        int lineStart = src.lastIndexOf('\n', pos - 1) + 1;
        while (true) {
            String line = src.substring(lineStart, Math.max(lineStart, src.indexOf('\n', lineStart)));
            Matcher d = DEFINE.matcher(line.strip());
            if (d.lookingAt()) {
                return Arrays.stream(d.group(1).split(",")).map(String::trim).toList();
            }
            if (lineStart == 0) {
                return null;
            }
            int prevStart = src.lastIndexOf('\n', lineStart - 2) + 1;
            String prev = src.substring(prevStart, lineStart - 1);
            if (!prev.stripTrailing().endsWith("\\")) {
                return null;
            }
            lineStart = prevStart;
        }
    }

    private static String stripComments(String s) {
        return s.replaceAll("(?s)/\\*.*?\\*/", " ").replaceAll("//[^\n]*", " ");
    }
}
