package org.orbitrl.scheduler.task;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.regex.Pattern;

/**
 * Sorting a list of integers in ascending order.
 *
 * <table>
 *   <caption>Formats</caption>
 *   <tr><td>prompt</td><td>{@code sort[5,3,9]=}: {@code listLength} integers, each uniform in
 *       {@code [0, maxValue]}, comma-separated without spaces</td></tr>
 *   <tr><td>completion</td><td>{@code [3,5,9];}: the sorted list in the same notation, then the end
 *       marker</td></tr>
 *   <tr><td>answer extracted</td><td>the response up to the first {@code ;} or newline, stripped
 *       ({@link AnswerText})</td></tr>
 *   <tr><td>format</td><td>a bracketed, comma-separated list of decimal integers ({@code []}
 *       allowed, spaces around items allowed, at most 18 digits an item)</td></tr>
 *   <tr><td>correct</td><td>well formed and, item by item, equal to the sorted input (same
 *       length)</td></tr>
 *   <tr><td>canonical form</td><td>the input list as given, {@code 5,3,9}</td></tr>
 * </table>
 */
public final class Sorting extends GeneratedTask {

    private static final Pattern LIST = Pattern.compile("\\[\\s*(?:[0-9]{1,18}\\s*(?:,\\s*[0-9]{1,18}\\s*)*)?]");

    private final int listLength;
    private final int maxValue;

    /** Lists of {@code listLength} (2..256) integers in {@code [0, maxValue]}, default weights. */
    public Sorting(int listLength, int maxValue) {
        this(listLength, maxValue, RewardWeights.DEFAULT);
    }

    public Sorting(int listLength, int maxValue, RewardWeights weights) {
        super(weights);
        if (listLength < 2 || listLength > 256) {
            throw new IllegalArgumentException("sort: list_length must be in 2..256, got " + listLength);
        }
        if (maxValue < 1) {
            throw new IllegalArgumentException("sort: max_value must be >= 1, got " + maxValue);
        }
        this.listLength = listLength;
        this.maxValue = maxValue;
    }

    @Override
    public String name() {
        return "sort";
    }

    @Override
    protected Problem draw(SplittableRandom rng) {
        long[] items = new long[listLength];
        for (int i = 0; i < listLength; i++) {
            items[i] = rng.nextLong(maxValue + 1L);
        }
        String input = join(items);
        long[] sorted = items.clone();
        Arrays.sort(sorted);
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("list", input);
        return new Problem(name() + ":" + input, "sort[" + input + "]=", "[" + join(sorted) + "]", meta);
    }

    @Override
    protected boolean wellFormed(Problem problem, String answer) {
        return LIST.matcher(answer).matches();
    }

    @Override
    protected boolean correct(Problem problem, String answer) {
        return parse(answer).equals(parse(problem.answer()));
    }

    @Override
    protected String describe() {
        return "sort of " + listLength + " items in [0, " + maxValue + "]";
    }

    /** The items of a well-formed list {@code [a, b, ...]}. */
    static List<Long> parse(String list) {
        String inner = list.strip();
        inner = inner.substring(1, inner.length() - 1).strip();
        List<Long> out = new ArrayList<>();
        if (inner.isEmpty()) {
            return out;
        }
        for (String item : inner.split(",")) {
            out.add(Long.parseLong(item.strip()));
        }
        return out;
    }

    private static String join(long[] items) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < items.length; i++) {
            sb.append(i == 0 ? "" : ",").append(items[i]);
        }
        return sb.toString();
    }
}
