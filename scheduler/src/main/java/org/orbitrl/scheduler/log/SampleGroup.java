package org.orbitrl.scheduler.log;

import java.util.List;

/**
 * The samples of one prompt, complete: ids 0..G-1 in order, one group id, one job. A group is
 * logged as one queue entry, so a crash never leaves part of a group in the log.
 *
 * @param samples the group's samples in sample-index order
 */
public record SampleGroup(List<SampleRecord> samples) {
    public SampleGroup {
        samples = List.copyOf(samples);
        if (samples.isEmpty()) {
            throw new IllegalArgumentException("a group needs at least one sample");
        }
        SampleRecord first = samples.getFirst();
        for (int i = 0; i < samples.size(); i++) {
            SampleRecord s = samples.get(i);
            if (s.groupId() != first.groupId() || !s.job().equals(first.job()) || !s.promptId().equals(first.promptId())) {
                throw new IllegalArgumentException("sample " + i + " belongs to job " + s.job() + " group " + s.groupId()
                        + " prompt " + s.promptId() + ", not to job " + first.job() + " group " + first.groupId()
                        + " prompt " + first.promptId());
            }
            if (s.sampleIndex() != i || s.groupSize() != samples.size()) {
                throw new IllegalArgumentException("group " + first.groupId() + " is ragged: position " + i + " holds sample "
                        + s.sampleIndex() + "/" + s.groupSize() + " in a group of " + samples.size());
            }
        }
    }

    /** The group's id. */
    public long groupId() {
        return samples.getFirst().groupId();
    }

    /** The group's size G. */
    public int size() {
        return samples.size();
    }
}
