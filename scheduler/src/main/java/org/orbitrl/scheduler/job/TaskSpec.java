package org.orbitrl.scheduler.job;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The task: a built-in generator with its size, or a JSONL dataset. Keys of one kind are
 * refused on another ({@code digits} on a {@code sort} task is a mistake, not a no-op).
 *
 * @param kind         which task
 * @param digits       addition: digits per operand
 * @param listLength   sort: items per list
 * @param maxValue     sort: largest item value
 * @param numbers      countdown: numbers given
 * @param maxTarget    countdown: largest target
 * @param trainPath    jsonl: the training file
 * @param evalPath     jsonl: the held-out file (null: the last {@code eval.size} lines of the training
 *                     file are held out)
 * @param answerFormat jsonl: how answers are written
 */
public record TaskSpec(TaskKind kind, int digits, int listLength, int maxValue, int numbers, int maxTarget,
                       Path trainPath, Path evalPath, AnswerFormat answerFormat) implements Scoped {
    private static final Map<String, TaskKind> OWNER = new LinkedHashMap<>();

    static {
        OWNER.put("digits", TaskKind.ADDITION);
        OWNER.put("list_length", TaskKind.SORT);
        OWNER.put("max_value", TaskKind.SORT);
        OWNER.put("numbers", TaskKind.COUNTDOWN);
        OWNER.put("max_target", TaskKind.COUNTDOWN);
        OWNER.put("train_path", TaskKind.JSONL);
        OWNER.put("eval_path", TaskKind.JSONL);
        OWNER.put("answer_format", TaskKind.JSONL);
    }

    public TaskSpec {
        new Checks()
                .require(kind != null, "kind", "is required")
                .range("digits", digits, 1, 18)
                .range("list_length", listLength, 2, 256)
                .range("max_value", maxValue, 1, 1_000_000_000)
                .range("numbers", numbers, 2, 8)
                .range("max_target", maxTarget, 1, 1_000_000)
                .require(kind != TaskKind.JSONL || trainPath != null, "train_path",
                        "is required for kind jsonl: the JSONL file of {\"prompt\": ..., \"answer\": ...} lines")
                .require(answerFormat != null, "answer_format", "is required")
                .done();
    }

    static TaskSpec read(Section s, Path baseDir) {
        TaskKind kind = s.choice("kind", TaskKind.ADDITION);
        int digits = s.integer("digits", 3);
        int listLength = s.integer("list_length", 5);
        int maxValue = s.integer("max_value", 99);
        int numbers = s.integer("numbers", 4);
        int maxTarget = s.integer("max_target", 100);
        Path trainPath = s.path("train_path", baseDir);
        Path evalPath = s.path("eval_path", baseDir);
        AnswerFormat format = s.choice("answer_format", AnswerFormat.AUTO);
        return Scoped.check(s, s.build(() -> new TaskSpec(kind, digits, listLength, maxValue, numbers, maxTarget,
                trainPath, evalPath, format)));
    }

    @Override
    public String choiceKey() {
        return "kind";
    }

    @Override
    public Map<String, String> unusedKeys() {
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, TaskKind> e : OWNER.entrySet()) {
            if (e.getValue() != kind) {
                out.put(e.getKey(), "applies to task kind " + Section.yamlName(e.getValue()) + ", not "
                        + Section.yamlName(kind));
            }
        }
        return out;
    }
}
