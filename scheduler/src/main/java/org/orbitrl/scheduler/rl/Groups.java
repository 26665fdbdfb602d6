package org.orbitrl.scheduler.rl;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Which samples belong together: one explicit group id per sample (typically the prompt id).
 * Members of a group need not be adjacent. Groups are listed in order of first appearance.
 *
 * <p>Built either with a required size ({@link #ofSize}): every group must have exactly that many
 * samples, and any other size is an error naming the group; or explicitly {@link #ragged}, where
 * sizes may differ (for example after stale samples were dropped). There is no silent fallback
 * from one to the other.
 */
public final class Groups {
    private final long[] ids;            // [samples] group id of each sample
    private final int[] groupOf;         // [samples] index into groupIds
    private final long[] groupIds;       // [groups] in order of first appearance
    private final int[][] members;       // [groups][size] sample indices, ascending

    private Groups(long[] ids, int[] groupOf, long[] groupIds, int[][] members) {
        this.ids = ids;
        this.groupOf = groupOf;
        this.groupIds = groupIds;
        this.members = members;
    }

    /**
     * Groups of exactly {@code size} samples each.
     *
     * @throws IllegalArgumentException naming the first group whose size differs
     */
    public static Groups ofSize(long[] groupIds, int size) {
        if (size < 1) {
            throw new IllegalArgumentException("group size must be >= 1, got " + size);
        }
        Groups g = build(groupIds);
        for (int i = 0; i < g.members.length; i++) {
            if (g.members[i].length != size) {
                throw new IllegalArgumentException("ragged group: group " + g.groupIds[i] + " has "
                        + g.members[i].length + " samples (indices " + Arrays.toString(g.members[i])
                        + "), expected " + size);
            }
        }
        return g;
    }

    /** Groups whose sizes may differ. */
    public static Groups ragged(long[] groupIds) {
        return build(groupIds);
    }

    private static Groups build(long[] ids) {
        if (ids.length == 0) {
            throw new IllegalArgumentException("no samples: group ids are empty");
        }
        Map<Long, Integer> index = new LinkedHashMap<>();
        int[] groupOf = new int[ids.length];
        List<List<Integer>> lists = new ArrayList<>();
        for (int s = 0; s < ids.length; s++) {
            Integer g = index.get(ids[s]);
            if (g == null) {
                g = lists.size();
                index.put(ids[s], g);
                lists.add(new ArrayList<>());
            }
            groupOf[s] = g;
            lists.get(g).add(s);
        }
        long[] gids = new long[lists.size()];
        int[][] members = new int[lists.size()][];
        int i = 0;
        for (Map.Entry<Long, Integer> e : index.entrySet()) {
            gids[i] = e.getKey();
            members[i] = lists.get(e.getValue()).stream().mapToInt(Integer::intValue).toArray();
            i++;
        }
        return new Groups(ids.clone(), groupOf, gids, members);
    }

    /** Number of samples. */
    public int samples() {
        return ids.length;
    }

    /** Number of groups. */
    public int count() {
        return groupIds.length;
    }

    /** Id of group {@code g} (0-based, order of first appearance). */
    public long id(int g) {
        return groupIds[g];
    }

    /** Sample indices of group {@code g}, ascending. */
    public int[] members(int g) {
        return members[g].clone();
    }

    /** Group index of sample {@code s}. */
    public int groupOf(int s) {
        return groupOf[s];
    }

    /**
     * Throws unless every group has at least {@code min} samples; {@code what} names the
     * estimator that needs them.
     */
    public void requireAtLeast(int min, String what) {
        for (int g = 0; g < members.length; g++) {
            if (members[g].length < min) {
                throw new IllegalArgumentException(what + " needs at least " + min + " samples per group, group "
                        + groupIds[g] + " has " + members[g].length + " (indices " + Arrays.toString(members[g]) + ")");
            }
        }
    }

    /** Throws unless {@code values} has one entry per sample. */
    void requireOnePerSample(float[] values, String what) {
        if (values.length != ids.length) {
            throw new IllegalArgumentException(what + ": " + values.length + " values for " + ids.length + " samples");
        }
    }
}
