package org.orbitrl.scheduler.report;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.Iterator;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * The line format of {@code metrics.jsonl}, in both directions. Field names are snake case; NaN is
 * written as {@code null} and read back as NaN; a missing field reads as NaN (or 0 for counts).
 * <pre>
 * {"type":"step","step":3,"time":"2026-01-01T00:00:03Z","reward_mean":0.4,"accuracy":0.3,
 *  "logprob_gap_mean":1.2e-6,"logprob_gap_max":3.0e-5,"tokens":512,"tokens_per_s":256.0,
 *  "step_seconds":2.0,"adapter_version":3,"extras":{"loss":0.1},"memory_bytes":{"weights":1048576}}
 * {"type":"eval","step":0,"time":"...","accuracy":0.2,"pass_at_k":{"1":0.21,"4":0.45}}
 * {"type":"end","step":100,"time":"...","status":"completed","message":""}
 * </pre>
 */
final class MetricsJson {

    static final ObjectMapper MAPPER = new ObjectMapper();

    private MetricsJson() {
    }

    static ObjectNode write(StepRecord r) {
        ObjectNode o = MAPPER.createObjectNode();
        o.put("type", "step");
        o.put("step", r.step());
        o.put("time", r.time() == null ? null : r.time().toString());
        number(o, "reward_mean", r.rewardMean());
        number(o, "accuracy", r.accuracy());
        number(o, "logprob_gap_mean", r.logprobGapMean());
        number(o, "logprob_gap_max", r.logprobGapMax());
        o.put("tokens", r.tokens());
        number(o, "tokens_per_s", r.tokensPerSecond());
        number(o, "step_seconds", r.stepSeconds());
        o.put("adapter_version", r.adapterVersion());
        ObjectNode extras = o.putObject("extras");
        r.extras().forEach((k, v) -> number(extras, k, v));
        ObjectNode memory = o.putObject("memory_bytes");
        r.memoryBytes().forEach(memory::put);
        return o;
    }

    static ObjectNode write(EvalRecord r) {
        ObjectNode o = MAPPER.createObjectNode();
        o.put("type", "eval");
        o.put("step", r.step());
        o.put("time", r.time() == null ? null : r.time().toString());
        number(o, "accuracy", r.accuracy());
        ObjectNode pass = o.putObject("pass_at_k");
        r.passAtK().forEach((k, v) -> number(pass, Integer.toString(k), v));
        return o;
    }

    static ObjectNode write(EndRecord r) {
        ObjectNode o = MAPPER.createObjectNode();
        o.put("type", "end");
        o.put("step", r.step());
        o.put("time", r.time() == null ? null : r.time().toString());
        o.put("status", r.status());
        o.put("message", r.message());
        return o;
    }

    static StepRecord step(JsonNode o) {
        SortedMap<String, Double> extras = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = o.path("extras").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            extras.put(e.getKey(), number(e.getValue()));
        }
        SortedMap<String, Long> memory = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = o.path("memory_bytes").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (e.getValue().isNumber()) {
                memory.put(e.getKey(), e.getValue().asLong());
            }
        }
        return new StepRecord(o.path("step").asLong(), time(o), number(o.get("reward_mean")), number(o.get("accuracy")),
                number(o.get("logprob_gap_mean")), number(o.get("logprob_gap_max")), o.path("tokens").asLong(),
                number(o.get("tokens_per_s")), number(o.get("step_seconds")), o.path("adapter_version").asLong(),
                extras, memory);
    }

    static EvalRecord eval(JsonNode o) {
        SortedMap<Integer, Double> pass = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = o.path("pass_at_k").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            try {
                pass.put(Integer.parseInt(e.getKey()), number(e.getValue()));
            } catch (NumberFormatException bad) {
                throw new IllegalArgumentException("pass_at_k key \"" + e.getKey() + "\" is not an integer k", bad);
            }
        }
        return new EvalRecord(o.path("step").asLong(), time(o), number(o.get("accuracy")), pass);
    }

    static EndRecord end(JsonNode o) {
        return new EndRecord(o.path("step").asLong(), time(o), o.path("status").asText(""), o.path("message").asText(""));
    }

    private static void number(ObjectNode o, String key, double v) {
        if (Double.isFinite(v)) {
            o.put(key, v);
        } else {
            o.putNull(key);
        }
    }

    private static double number(JsonNode n) {
        return n != null && n.isNumber() ? n.asDouble() : Double.NaN;
    }

    private static Instant time(JsonNode o) {
        JsonNode t = o.get("time");
        if (t == null || !t.isTextual()) {
            return null;
        }
        try {
            return Instant.parse(t.asText());
        } catch (DateTimeParseException e) {
            throw new IllegalArgumentException("time \"" + t.asText() + "\" is not an ISO-8601 instant", e);
        }
    }
}
