package org.orbitrl.memory.plan;

/**
 * The shape of one RL step: {@code prompts} prompts, each sampled {@code samplesPerPrompt} times
 * (a group), every sequence at most {@code promptLen + responseLen} tokens; the trainer takes
 * {@code microBatch} sequences per forward/backward on each data-parallel rank.
 *
 * @param prompts          prompts per step
 * @param samplesPerPrompt samples per prompt (the group size)
 * @param promptLen        longest prompt in tokens
 * @param responseLen      longest response in tokens
 * @param microBatch       sequences per training micro-batch per data-parallel rank
 */
public record BatchShape(int prompts, int samplesPerPrompt, int promptLen, int responseLen, int microBatch) {

    public BatchShape {
        positive("prompts", prompts);
        positive("samples per prompt", samplesPerPrompt);
        positive("prompt length", promptLen);
        positive("response length", responseLen);
        positive("micro-batch", microBatch);
        Math.multiplyExact(prompts, samplesPerPrompt);
        Math.addExact(promptLen, responseLen);
    }

    private static void positive(String what, int v) {
        if (v <= 0) {
            throw new IllegalArgumentException(what + " must be a positive number, got " + v);
        }
    }

    /** Sequences generated per step. */
    public long sequences() {
        return (long) prompts * samplesPerPrompt;
    }

    /** Longest sequence in tokens. */
    public long seqLen() {
        return (long) promptLen + responseLen;
    }

    public BatchShape withPrompts(int p) {
        return new BatchShape(p, samplesPerPrompt, promptLen, responseLen, microBatch);
    }

    public BatchShape withMicroBatch(int m) {
        return new BatchShape(prompts, samplesPerPrompt, promptLen, responseLen, m);
    }

    @Override
    public String toString() {
        return prompts + " prompts x " + samplesPerPrompt + " samples, " + promptLen + "+" + responseLen
                + " tokens, micro-batch " + microBatch;
    }
}
