package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The built-in verifiers on hand-written responses: correct, wrong, malformed, with extra text,
 * with and without the end marker. Default weights: correct 1.0, format 0.1.
 */
class VerifiersTest {

    /** Expected verdict: c = correct, f = well formed. */
    private record Case(String response, boolean c, boolean f) {
    }

    private static Case ok(String r) {
        return new Case(r, true, true);
    }

    private static Case wrong(String r) {
        return new Case(r, false, true);
    }

    private static Case malformed(String r) {
        return new Case(r, false, false);
    }

    @Test
    void addition() {
        Problem p = new Problem("addition:12+345", "12+345=", "357", Map.of("a", "12", "b", "345"));
        check(new Addition(3), p, List.of(
                ok("357;"), ok("357"), ok("357\n"), ok(" 357 ;"), ok("357;358"), ok("357\nmore text"), ok("0357;"),
                wrong("358;"), wrong("35;"), wrong("357357357"), wrong("0;"),
                malformed("357 is the answer;"), malformed("the answer is 357;"), malformed("abc;"), malformed(""),
                malformed(";357"), malformed("\n357;"), malformed("-357;"), malformed("+357;"), malformed("3 57;"),
                malformed("357.0;"), malformed("35,7;")));
    }

    @Test
    void sorting() {
        Problem p = new Problem("sort:5,3,9,3", "sort[5,3,9,3]=", "[3,3,5,9]", Map.of("list", "5,3,9,3"));
        check(new Sorting(4, 9), p, List.of(
                ok("[3,3,5,9];"), ok("[3,3,5,9]"), ok("[3, 3, 5, 9];"), ok(" [ 3,3,5,9 ] \nx"), ok("[3,3,5,9];[1]"),
                ok("[03,3,5,9];"),
                wrong("[3,5,9];"), wrong("[3,3,5,9,9];"), wrong("[3,5,3,9];"), wrong("[9,5,3,3];"), wrong("[];"),
                malformed("3,3,5,9;"), malformed("[3,3,5,9"), malformed("[3,,3,5,9];"), malformed("[3 3 5 9];"),
                malformed("sorted: [3,3,5,9];"), malformed("[3,3,5,9] done;"), malformed("[a];"), malformed(""),
                malformed("[-3,3,5,9];"), malformed("(3,3,5,9);")));
    }

    @Test
    void countdown() {
        // 41 = 5*7 + 3*2
        check(new Countdown(4, 100), countdown(41, 2, 3, 5, 7), List.of(
                ok("5*7+3*2;"), ok("7*5+2*3"), ok("(5*7)+(3*2);"), ok(" 5 * 7 + 3 * 2 ;"), ok("5\u00d77+3\u00d72;"),
                ok("2*3+5*7\nthat is 41"), ok("((5*7)+(2*3));"),
                wrong("5*7+3+3;"), wrong("5*7+6;"), wrong("35+6;"), wrong("5*7;"), wrong("41;"),
                wrong("5*7+3*2+0;"), wrong("5*7+3*2*1;"), wrong("(5+7)*3+2;"), wrong("5*7+3/2*4;"),
                wrong("5/(3-3)+41;"),
                malformed("5*7+3*2=41;"), malformed("(5*7+3*2;"), malformed("5**7+3*2;"), malformed(""),
                malformed("x=5*7+3*2;"), malformed("-2+5*7+8;"), malformed("5*7+3*2 is 41;"), malformed("5.0*7+3*2;")));
        // 24 = 6 / (1 - 3/4): an exact fraction in the middle; other solutions count too
        check(new Countdown(4, 100), countdown(24, 1, 3, 4, 6), List.of(
                ok("6/(1-3/4);"), ok("6\u00f7(1\u22123\u00f74);"), ok("6*4;"), ok("4*6*1;"),
                wrong("6/1-3/4;"), wrong("6*3+4+1;"), wrong("6/(1-3/4)*1*1;")));
        // 24 = 8 / (3 - 8/3): 3 and 8 are each given twice, so each may be used twice; in floating
        // point this is 24.000000000000004. 8*(3-8/3)*9 is 24 too but 9 is not given.
        check(new Countdown(4, 100), countdown(24, 3, 3, 8, 8), List.of(
                ok("8/(3-8/3);"), wrong("8/(3-8/3)+3-3+8-8;"), wrong("8*(3-8/3)*9;"), ok("8*3;"), wrong("8*3*3;"), wrong("8*8/3;")));
    }

    @Test
    void weightsAreDocumentedValues() {
        Problem p = new Problem("addition:1+2", "1+2=", "3", Map.of());
        Addition a = new Addition(1);
        assertEquals(Map.of("correct", 1.0, "format", 1.0), a.verify(p, "3;").breakdown());
        assertEquals(List.of("correct", "format"), new ArrayList<>(a.verify(p, "3;").breakdown().keySet()));
        Addition weighted = new Addition(1, new RewardWeights(2.0, 0.5));
        assertEquals(2.5, weighted.verify(p, "3;").total());
        assertEquals(0.5, weighted.verify(p, "4;").total());
        assertEquals(0.0, weighted.verify(p, "x;").total());
        assertEquals("3;", a.completion(p));
        assertEquals(List.of(";", "\n"), a.stopStrings());
    }

    private static Problem countdown(long target, long... numbers) {
        StringBuilder shown = new StringBuilder();
        for (long n : numbers) {
            shown.append(shown.isEmpty() ? "" : ",").append(n);
        }
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("numbers", shown.toString());
        meta.put("target", Long.toString(target));
        return new Problem("countdown:" + shown + ":" + target, "target" + target + "[" + shown + "]=", "?", meta);
    }

    private static void check(Task task, Problem p, List<Case> cases) {
        StringBuilder bad = new StringBuilder();
        for (Case c : cases) {
            Reward r = task.verify(p, c.response());
            double total = (c.c() ? 1.0 : 0.0) + (c.f() ? 0.1 : 0.0);
            if (r.correct() != c.c() || r.breakdown().get("format") != (c.f() ? 1.0 : 0.0)
                    || Math.abs(r.total() - total) > 1e-12 || r.breakdown().get("correct") != (c.c() ? 1.0 : 0.0)) {
                bad.append(String.format("  %s on \"%s\": expected correct=%s format=%s total=%.1f, got %s%n",
                        p.prompt(), c.response().replace("\n", "\\n"), c.c(), c.f(), total, r));
            }
        }
        assertEquals("", bad.toString(), "verdicts that differ:\n" + bad);
    }
}
