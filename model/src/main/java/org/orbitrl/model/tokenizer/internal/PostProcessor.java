package org.orbitrl.model.tokenizer.internal;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The {@code post_processor} of a tokenizer.json, applied to a single sequence when special tokens
 * are added: {@code TemplateProcessing} (DeepSeek-V3's BOS), {@code BertProcessing} and
 * {@code RobertaProcessing} (CLS ... SEP), {@code ByteLevel} (offsets only, so no change to ids),
 * and {@code Sequence} of these.
 */
public final class PostProcessor {
    /** ids before and after the sequence. */
    private final int[] prefix;
    private final int[] suffix;

    private PostProcessor(int[] prefix, int[] suffix) {
        this.prefix = prefix;
        this.suffix = suffix;
    }

    /** The processor at {@code node}; absent means nothing is added. */
    public static PostProcessor parse(JsonNodeReader node) {
        if (node == null) {
            return new PostProcessor(new int[0], new int[0]);
        }
        String type = node.type();
        return switch (type) {
            case "ByteLevel" -> new PostProcessor(new int[0], new int[0]);
            case "TemplateProcessing" -> template(node);
            case "BertProcessing", "RobertaProcessing" -> new PostProcessor(
                    new int[] {pairId(node, "cls")}, new int[] {pairId(node, "sep")});
            case "Sequence" -> {
                // Each processor wraps the output of the ones before it.
                List<PostProcessor> parts = new ArrayList<>();
                for (JsonNodeReader n : node.array("processors")) {
                    parts.add(parse(n));
                }
                IntList pre = new IntList();
                IntList suf = new IntList();
                for (int k = parts.size() - 1; k >= 0; k--) {
                    pre.addAll(parts.get(k).prefix);
                }
                for (PostProcessor part : parts) {
                    suf.addAll(part.suffix);
                }
                yield new PostProcessor(pre.toArray(), suf.toArray());
            }
            default -> throw node.error("type", "unsupported post-processor type '" + type
                    + "' (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)");
        };
    }

    private static int pairId(JsonNodeReader node, String key) {
        List<JsonNodeReader> pair = node.array(key);
        if (pair.size() != 2) {
            throw node.error(key, "expected [token, id]");
        }
        return pair.get(1).asInt();
    }

    private static PostProcessor template(JsonNodeReader node) {
        Map<String, int[]> specials = new HashMap<>();
        JsonNodeReader st = node.child("special_tokens");
        if (st != null) {
            for (Map.Entry<String, JsonNodeReader> e : st.fields()) {
                List<JsonNodeReader> ids = e.getValue().array("ids");
                int[] v = new int[ids.size()];
                for (int i = 0; i < v.length; i++) {
                    v[i] = ids.get(i).asInt();
                }
                specials.put(e.getKey(), v);
            }
        }
        IntList prefix = new IntList();
        IntList suffix = new IntList();
        boolean seenSequence = false;
        for (JsonNodeReader item : node.array("single")) {
            if (item.has("Sequence")) {
                String id = item.object("Sequence").string("id");
                if (!id.equals("A") || seenSequence) {
                    throw item.error("a single-sequence template holds sequence A once, found '" + id + "'");
                }
                seenSequence = true;
            } else if (item.has("SpecialToken")) {
                String id = item.object("SpecialToken").string("id");
                int[] ids = specials.get(id);
                if (ids == null) {
                    throw item.error("special token '" + id + "' is not in special_tokens");
                }
                (seenSequence ? suffix : prefix).addAll(ids);
            } else {
                throw item.error("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
        }
        if (!seenSequence) {
            throw node.error("single", "the template has no sequence $A");
        }
        return new PostProcessor(prefix.toArray(), suffix.toArray());
    }

    /** {@code ids} with the special tokens of this processor around it. */
    public int[] apply(int[] ids) {
        if (prefix.length == 0 && suffix.length == 0) {
            return ids;
        }
        return new IntList(prefix.length + ids.length + suffix.length).addAll(prefix).addAll(ids).addAll(suffix).toArray();
    }
}
