package org.orbitrl.scheduler.report;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.SortedSet;
import java.util.TreeSet;

/** The HTML of a report: a summary table, what is missing, then the charts. */
final class ReportPage {

    private ReportPage() {
    }

    static String html(Path metrics, MetricsHistory h, List<Report.Chart> charts, List<String> notes) {
        StringBuilder b = new StringBuilder();
        b.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Orbit job report</title>\n")
                .append("<style>body{font-family:sans-serif;margin:2em;max-width:960px}table{border-collapse:collapse;")
                .append("margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}")
                .append("th:first-child,td:first-child{text-align:left}img{display:block;margin:1em 0;max-width:100%}")
                .append(".notes li{color:#8a4b00}</style>\n</head>\n<body>\n<h1>Orbit job report</h1>\n");
        b.append("<p>From <code>").append(esc(metrics.toString())).append("</code></p>\n");
        summary(b, h);
        evals(b, h);
        if (!notes.isEmpty()) {
            b.append("<h2>Missing or skipped</h2>\n<ul class=\"notes\">\n");
            for (String n : notes) {
                b.append("<li>").append(esc(n)).append("</li>\n");
            }
            b.append("</ul>\n");
        }
        for (Report.Chart c : charts) {
            b.append("<h2>").append(esc(c.title())).append("</h2>\n<img src=\"").append(esc(c.file().getFileName()
                    .toString())).append("\" alt=\"").append(esc(c.title())).append("\" width=\"").append(Charts.WIDTH)
                    .append("\" height=\"").append(Charts.HEIGHT).append("\">\n");
        }
        return b.append("</body>\n</html>\n").toString();
    }

    private static void summary(StringBuilder b, MetricsHistory h) {
        List<StepRecord> steps = h.steps();
        b.append("<table>\n");
        row(b, "status", h.end().map(e -> e.status() + (e.message().isEmpty() ? "" : ": " + e.message()))
                .orElse("no end record (running, or stopped without finishing)"));
        if (steps.isEmpty()) {
            row(b, "steps recorded", "0");
        } else {
            row(b, "steps recorded", steps.size() + " (step " + steps.getFirst().step() + " to "
                    + steps.getLast().step() + ")");
            double seconds = 0;
            long tokens = 0;
            for (StepRecord s : steps) {
                seconds += Double.isFinite(s.stepSeconds()) ? s.stepSeconds() : 0;
                tokens += s.tokens();
            }
            row(b, "time in steps", duration(seconds));
            if (steps.getFirst().time() != null && steps.getLast().time() != null) {
                row(b, "wall time, first to last step", duration(
                        Duration.between(steps.getFirst().time(), steps.getLast().time()).toMillis() / 1000.0));
            }
            row(b, "tokens generated", tokens + (seconds > 0 ? String.format(Locale.ROOT, " (%.1f tokens/s)",
                    tokens / seconds) : ""));
            row(b, "adapter version", Long.toString(steps.getLast().adapterVersion()));
        }
        row(b, "evaluations", Integer.toString(h.evals().size()));
        b.append("</table>\n");
    }

    private static void evals(StringBuilder b, MetricsHistory h) {
        List<EvalRecord> evals = h.evals();
        if (evals.isEmpty()) {
            return;
        }
        SortedSet<Integer> ks = new TreeSet<>();
        evals.forEach(e -> ks.addAll(e.passAtK().keySet()));
        b.append("<h2>Evaluation</h2>\n<table>\n<tr><th></th><th>step</th><th>accuracy (temperature 0)</th>");
        for (int k : ks) {
            b.append("<th>pass@").append(k).append("</th>");
        }
        b.append("</tr>\n");
        EvalRecord first = evals.getFirst();
        EvalRecord last = evals.getLast();
        evalRow(b, "first", first, ks);
        if (evals.size() > 1) {
            evalRow(b, "last", last, ks);
            b.append("<tr><td>change</td><td></td><td>").append(signed(last.accuracy() - first.accuracy()))
                    .append("</td>");
            for (int k : ks) {
                b.append("<td>").append(signed(last.passAtK().getOrDefault(k, Double.NaN)
                        - first.passAtK().getOrDefault(k, Double.NaN))).append("</td>");
            }
            b.append("</tr>\n");
        }
        b.append("</table>\n");
    }

    private static void evalRow(StringBuilder b, String label, EvalRecord e, SortedSet<Integer> ks) {
        b.append("<tr><td>").append(label).append("</td><td>").append(e.step()).append("</td><td>")
                .append(fixed(e.accuracy())).append("</td>");
        for (int k : ks) {
            b.append("<td>").append(fixed(e.passAtK().getOrDefault(k, Double.NaN))).append("</td>");
        }
        b.append("</tr>\n");
    }

    private static void row(StringBuilder b, String key, String value) {
        b.append("<tr><th>").append(esc(key)).append("</th><td>").append(esc(value)).append("</td></tr>\n");
    }

    private static String fixed(double v) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%.3f", v) : "&mdash;";
    }

    private static String signed(double v) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%+.3f", v) : "&mdash;";
    }

    /** {@code 1h 02m 03s}, {@code 4m 05s}, {@code 6.2s}. */
    static String duration(double seconds) {
        long s = Math.round(seconds);
        if (s < 60) {
            return String.format(Locale.ROOT, "%.1fs", seconds);
        }
        return s >= 3600 ? String.format(Locale.ROOT, "%dh %02dm %02ds", s / 3600, s / 60 % 60, s % 60)
                : String.format(Locale.ROOT, "%dm %02ds", s / 60, s % 60);
    }

    static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }
}
