package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.arch.DecoderConfig;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/** The markdown {@link Qwen3TrainBench} prints and writes: a line per fact, a row per shape, the peer's figures beside. */
final class TrainBenchReport {

    /** One tokens-per-step shape: timing, the allocator's peak, the planner's prediction. */
    static final class Row {
        final int batch;
        final int seq;
        double seconds;                       // per step
        double loss;
        String failure;                       // null when it ran
        Map<MemoryCategory, Long> peak;       // bytes by category
        long peakTotal;                       // bytes
        Map<MemoryCategory, Long> planned;    // bytes by category, null if the planner refused

        Row(int batch, int seq) {
            this.batch = batch;
            this.seq = seq;
        }

        long tokens() {
            return (long) batch * seq;
        }
    }

    /** An adapter publish: bytes copied, wall time, how. */
    record Publish(long bytes, double ms, String how) {
    }

    private static final List<MemoryCategory> TRAINING = List.of(MemoryCategory.BASE_WEIGHTS, MemoryCategory.DEQUANT_BUFFERS,
            MemoryCategory.ADAPTER_PARAMS, MemoryCategory.ADAPTER_GRADS, MemoryCategory.OPTIMIZER_STATE,
            MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS);

    private static final ObjectMapper JSON = new ObjectMapper();

    private final StringBuilder text = new StringBuilder();
    private final List<String> header = new ArrayList<>();   // the lines before the table, kept for a later render
    private final List<Row> rows = new ArrayList<>();
    private final JsonNode peer;
    private boolean quiet;
    private double layerScale = 1;   // the config's layers over the layers built

    TrainBenchReport(TrainBenchOptions o, String kernels, DecoderConfig dc, int fullLayers, JsonNode peer) {
        this.peer = peer;
        Path dir = o.config().toAbsolutePath().getParent();
        line(String.format("## Adapter training, %s shape%s, random weights (Qwen3TrainBench)",
                dir == null ? o.config() : dir.getFileName(), o.small() ? " shrunk by --small" : ""));
        line("");
        line(String.format("%s, backend %s, %d threads; recompute %s, expert chunk %d, %d timed steps per shape after one warm-up",
                Instant.now(), kernels, Runtime.getRuntime().availableProcessors(), o.recompute(), o.expertChunk(), o.steps()));
        layerScale = fullLayers / (double) dc.layers();
        if (dc.layers() != fullLayers) {
            line(String.format("**Only %d of the %d layers are built: every figure below is for %d layers, not the real model.**",
                    dc.layers(), fullLayers, dc.layers()));
        }
    }

    private TrainBenchReport(JsonNode peer) {
        this.peer = peer;
    }

    void line(String s) {
        if (!quiet) {
            System.out.println(s);
        }
        text.append(s).append('\n');
        header.add(s);
    }

    /** Everything measured, as JSON, so that {@link #fromJson} can render the table again with the peer's figures. */
    void writeJson(Path file) throws IOException {
        ObjectNode root = JSON.createObjectNode();
        root.put("layerScale", layerScale);
        ArrayNode h = root.putArray("header");
        header.forEach(h::add);
        ArrayNode rs = root.putArray("rows");
        for (Row r : rows) {
            ObjectNode n = rs.addObject();
            n.put("batch", r.batch);
            n.put("seq", r.seq);
            n.put("seconds", r.seconds);
            n.put("loss", r.loss);
            n.put("failure", r.failure);
            n.put("peakTotal", r.peakTotal);
            n.set("peak", bytes(r.peak));
            n.set("planned", bytes(r.planned));
        }
        JSON.writerWithDefaultPrettyPrinter().writeValue(file.toFile(), root);
    }

    /** A report read back from {@link #writeJson}, with the peer's JSON (or null) beside it. */
    static TrainBenchReport fromJson(Path file, JsonNode peer) throws IOException {
        JsonNode root = JSON.readTree(file.toFile());
        TrainBenchReport t = new TrainBenchReport(peer);
        t.quiet = true;
        t.layerScale = root.path("layerScale").asDouble(1);
        for (JsonNode l : root.path("header")) {
            if (!l.asText().contains(" s/step, ") && !l.asText().contains(": out of memory")) {
                t.line(l.asText());
            }
        }
        for (JsonNode n : root.path("rows")) {
            Row r = new Row(n.get("batch").asInt(), n.get("seq").asInt());
            r.seconds = n.get("seconds").asDouble();
            r.loss = n.get("loss").asDouble();
            r.failure = n.get("failure").isNull() ? null : n.get("failure").asText();
            r.peakTotal = n.get("peakTotal").asLong();
            r.peak = categories(n.get("peak"));
            r.planned = categories(n.get("planned"));
            t.add(r);
        }
        t.quiet = false;
        return t;
    }

    private static JsonNode bytes(Map<MemoryCategory, Long> m) {
        if (m == null) {
            return JSON.nullNode();
        }
        ObjectNode o = JSON.createObjectNode();
        m.forEach((c, b) -> o.put(c.name(), b));
        return o;
    }

    private static Map<MemoryCategory, Long> categories(JsonNode n) {
        if (n == null || n.isNull()) {
            return null;
        }
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (Iterator<Map.Entry<String, JsonNode>> it = n.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            m.put(MemoryCategory.valueOf(e.getKey()), e.getValue().asLong());
        }
        return m;
    }

    void add(Row r) {
        rows.add(r);
        if (r.failure != null) {
            line(String.format("%dx%d: %s", r.batch, r.seq, r.failure));
        } else {
            line(String.format("%dx%d: %.3f s/step, %.0f tokens/s, loss %.4f, peak %.2f GB%s", r.batch, r.seq, r.seconds,
                    r.tokens() / r.seconds, r.loss, r.peakTotal / 1e9, layerScale == 1 ? ""
                            : String.format(" (scaled to all layers: the whole step x %.1f gives %.0f tokens/s, a lower bound, "
                            + "as the embedding, head and loss do not grow with layers)", layerScale, r.tokens() / r.seconds / layerScale)));
        }
    }

    void publish(Publish p) {
        line(String.format("adapter publish (%s): %.1f MB in %.2f ms, %.1f GB/s", p.how(), p.bytes() / 1e6, p.ms(),
                p.bytes() / 1e6 / p.ms()));
    }

    void write(Path out) throws IOException {
        line("");
        JsonNode best = peerBest();
        line("| tokens/step | s/step | tokens/s | peak GB (allocator) | planner GB | measured/planner | peft tokens/s | Orbit/peft | peft peak GB |"
                + " Orbit/peft's fastest shape |");
        line("|---|---|---|---|---|---|---|---|---|---|");
        for (Row r : rows) {
            JsonNode p = peerRow(r);
            String peerTok = p == null ? "-" : p.path("oom").asBoolean(false) ? "OOM"
                    : p.has("tokens_per_s") ? String.format("%.0f", p.get("tokens_per_s").asDouble()) : "error";
            String ratio = r.failure == null && p != null && p.has("tokens_per_s") && !p.path("oom").asBoolean(false)
                    ? String.format("%s%.2f", layerScale == 1 ? "" : "≥", r.tokens() / r.seconds / layerScale / p.get("tokens_per_s").asDouble())
                    : "-";   // with fewer layers built: the step scaled to all layers, a lower bound
            String peerPeak = p != null && p.has("peak_bytes") ? String.format("%.1f", p.get("peak_bytes").asDouble() / 1e9) : "-";
            long planned = r.planned == null ? 0 : sum(r.planned, TRAINING);
            long measured = sum(r.peak, TRAINING);
            String bestRatio = r.failure == null && best != null
                    ? String.format("%s%.2f", layerScale == 1 ? "" : "≥", r.tokens() / r.seconds / layerScale / best.get("tokens_per_s").asDouble())
                    : "-";
            line(String.format("| %dx%d = %d | %s | %s | %.3f | %s | %s | %s | %s | %s | %s |", r.batch, r.seq, r.tokens(),
                    r.failure == null ? String.format("%.3f", r.seconds) : r.failure.startsWith("out of memory") ? "OOM" : "failed",
                    r.failure == null ? String.format("%.0f", r.tokens() / r.seconds) : "-", r.peakTotal / 1e9,
                    r.planned == null ? "-" : String.format("%.3f", planned / 1e9),
                    r.planned == null ? "-" : String.format("%.2f", measured / (double) planned), peerTok, ratio, peerPeak, bestRatio));
        }
        if (best != null) {
            line("");
            line(String.format("peft's fastest shape that ran (the last column's reference): %dx%d, %.0f tokens/s, peak %.1f GB.",
                    best.path("batch").asInt(), best.path("seq").asInt(), best.get("tokens_per_s").asDouble(),
                    best.path("peak_bytes").asDouble() / 1e9));
        }
        Row last = null;
        for (Row r : rows) {
            if (r.failure == null) {
                last = r;
            }
        }
        if (last != null && last.planned != null) {
            line("");
            line(String.format("Peak by category at %dx%d (allocator peaks since start, dropped activations freed before each step; planner per GPU, training categories):", last.batch, last.seq));
            line("");
            line("| category | measured GB | planner GB | measured/planner |");
            line("|---|---|---|---|");
            for (MemoryCategory c : TRAINING) {
                long m = last.peak.getOrDefault(c, 0L);
                long p = last.planned.getOrDefault(c, 0L);
                line(String.format("| %s | %.3f | %.3f | %s |", c.name().toLowerCase(java.util.Locale.ROOT), m / 1e9, p / 1e9,
                        p == 0 ? "-" : String.format("%.2f", m / (double) p)));
            }
        }
        if (peer != null) {
            line("");
            line(String.format("peer (tools/gpu/peer_train.py, bf16 base, LoRA r=32 on q/k/v/o + fused experts): %s on %s, %s layers, "
                    + "gradient checkpointing %s, %s adapter parameters %s", peer.path("versions"), peer.path("device").asText("?"),
                    peer.path("layers").asText("?"), peer.path("gradient_checkpointing").asText("?"),
                    peer.path("adapter_params").asText("?"), peer.path("adapter_dtypes")));
        }
        if (out != null) {
            Files.writeString(out, text.toString());
        }
    }

    /** The peer's row of the most tokens/s among the shapes that ran (not out of memory), or null. */
    private JsonNode peerBest() {
        JsonNode best = null;
        if (peer != null) {
            for (JsonNode n : peer.path("results")) {
                if (!n.path("oom").asBoolean(false) && n.has("tokens_per_s")
                        && (best == null || n.get("tokens_per_s").asDouble() > best.get("tokens_per_s").asDouble())) {
                    best = n;
                }
            }
        }
        return best;
    }

    private JsonNode peerRow(Row r) {
        if (peer == null) {
            return null;
        }
        for (JsonNode n : peer.path("results")) {
            if (n.path("batch").asInt() == r.batch && n.path("seq").asInt() == r.seq) {
                return n;
            }
        }
        return null;
    }

    private static long sum(Map<MemoryCategory, Long> m, List<MemoryCategory> cs) {
        long s = 0;
        for (MemoryCategory c : cs) {
            s += m.getOrDefault(c, 0L);
        }
        return s;
    }
}
