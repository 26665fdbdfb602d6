package org.orbitrl.scheduler.rollout;

/**
 * A generation request: {@code samples} continuations of one prompt (GRPO's group), which share
 * the prompt's cache blocks. Sample s draws from its own random stream, derived from
 * {@code params.seed()} and s.
 */
public record Request(String id, int[] prompt, SamplingParams params, int samples) {
    public Request {
        if (id == null || id.isEmpty()) {
            throw new IllegalArgumentException("a request needs an id");
        }
        if (prompt == null || prompt.length == 0) {
            throw new IllegalArgumentException("request " + id + ": empty prompt");
        }
        if (samples <= 0) {
            throw new IllegalArgumentException("request " + id + ": samples must be positive, got " + samples);
        }
        prompt = prompt.clone();
    }

    public static Request of(String id, int[] prompt, SamplingParams params) {
        return new Request(id, prompt, params, 1);
    }
}
